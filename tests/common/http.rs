//! A real HTTP/1.1 + h2c backend (hyper) for L7 tests: answers every request with JSON
//! naming itself and what it received (version, method, path, headers). `/slow` answers
//! after 2 s; `/fail` answers 503; `/count` is the requests served so far.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub struct HttpBackend {
    pub addr: SocketAddr,
    pub served: Arc<AtomicUsize>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl HttpBackend {
    /// Starts a backend called `name` on loopback; `fail` makes every request a 503.
    pub async fn start(name: &str, fail: bool) -> HttpBackend {
        HttpBackend::start_at(name, fail, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts a backend on `addr` (a stopped backend's address starts it again).
    pub async fn start_at(name: &str, fail: bool, addr: SocketAddr) -> HttpBackend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        let name = name.to_string();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((conn, _)) => conn,
                        Err(_) => return,
                    },
                    _ = stop_asked(stopped.clone()) => return,
                };
                let (name, count) = (name.clone(), count.clone());
                let stopping = stopped.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (name, count) = (name.clone(), count.clone());
                        async move { Ok::<_, Infallible>(answer(&name, fail, &count, req).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let serve = builder.serve_connection(TokioIo::new(conn), service);
                    tokio::select! {
                        _ = serve => {}
                        _ = stop_asked(stopping) => {}
                    }
                });
            }
        });
        HttpBackend { addr, served, stop }
    }

    /// Stops listening and drops every open connection, as a killed process would.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

/// Resolves when [`HttpBackend::stop`] is called; never when the handle is only dropped.
async fn stop_asked(mut stopped: tokio::sync::watch::Receiver<bool>) {
    if stopped.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn answer(
    name: &str,
    fail: bool,
    count: &AtomicUsize,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if parts.uri.path() == "/slow" {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
        .collect();
    let json = serde_json::json!({
        "name": name,
        "version": format!("{:?}", parts.version),
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "headers": headers,
        "body_len": body.len(),
        "count": n,
    });
    let status = if fail || parts.uri.path() == "/fail" {
        503
    } else {
        200
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-served-by", name)
        .body(Full::new(Bytes::from(json.to_string())))
        .unwrap()
}

/// One GET of `path` on a new connection to `addr`, as a client that knows nothing of
/// the mesh: (status, body), or `None` when the connection fails or no answer comes in 3 s.
pub async fn get_raw(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    get_with_headers(addr, path, &[]).await
}

/// [`get_raw`] with extra header lines (`name: value`).
pub async fn get_with_headers(
    addr: SocketAddr,
    path: &str,
    headers: &[&str],
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let attempt = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: mesh\r\n{extra}connection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        conn.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
}

/// Who answered a GET of `/` (the backend's name), if it answered 200.
pub async fn served_by(addr: SocketAddr) -> Option<String> {
    let (status, body) = get_raw(addr, "/").await?;
    if status != 200 {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    json["name"].as_str().map(str::to_string)
}

/// Adds `web.shop` (port `http=8080/http`) backed by `backends` to `def`, exported or not.
pub fn add_web(def: &super::ClusterDef, backends: &[&HttpBackend], export: bool) {
    let mut args = vec![
        "service".to_string(),
        "add".into(),
        "web.shop".into(),
        "--port".into(),
        "http=8080/http".into(),
    ];
    for b in backends {
        args.push("--endpoint".into());
        args.push(b.addr.to_string());
    }
    if export {
        args.push("--export".into());
    }
    def.cli_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
}
