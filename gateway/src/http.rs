//! HTTP pieces the node proxy and the gateway share: the streamed body type, upstream
//! connections (HTTP/1.1 or HTTP/2, one request at a time), protocol upgrades spliced into
//! byte streams, and the answers a mesh hop makes itself (`ferry-error`).

use bytes::Bytes;
use http::header::CONNECTION;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Bodies both ways: streamed, never buffered whole.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// The header naming why a mesh hop answered instead of a server.
pub const FERRY_ERROR: &str = "ferry-error";

/// An empty body.
pub fn empty_body() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// The HTTP version spoken upstream: the one the request came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    H1,
    H2,
}

impl Proto {
    pub fn of(version: Version) -> Proto {
        match version {
            Version::HTTP_2 => Proto::H2,
            _ => Proto::H1,
        }
    }
}

/// One upstream connection's request side.
pub enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Sender {
    pub fn proto(&self) -> Proto {
        match self {
            Sender::H1(_) => Proto::H1,
            Sender::H2(_) => Proto::H2,
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Waits until the connection can take a request.
    pub async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }

    /// Sends `req`. On failure, the request comes back when none of it was written (a
    /// pooled connection the server had just closed): it can go on another connection
    /// whatever the method, with its body intact.
    pub async fn send(
        &mut self,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, (hyper::Error, Option<Request<Body>>)> {
        let sent = match self {
            Sender::H1(s) => s.try_send_request(req).await,
            Sender::H2(s) => s.try_send_request(req).await,
        };
        sent.map_err(|mut e| {
            let unsent = e.take_message();
            (e.into_error(), unsent)
        })
    }
}

/// Starts an HTTP client connection of version `proto` over `io`; the connection is driven
/// by its own task (HTTP/1.1 ones allow upgrades).
pub async fn handshake<IO>(io: IO, proto: Proto) -> hyper::Result<Sender>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let io = TokioIo::new(io);
    Ok(match proto {
        Proto::H1 => {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
                }
            });
            Sender::H1(sender)
        }
        Proto::H2 => {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            Sender::H2(sender)
        }
    })
}

/// Whether the request asks to switch protocols (HTTP/1.1 `Connection: upgrade`).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(http::header::UPGRADE)
        && req
            .headers()
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Once both sides have switched protocols, moves bytes both ways until either ends;
/// `guard` is held (an in-flight count, a stream's metrics) until then.
pub async fn splice_upgraded<G>(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    guard: G,
) {
    let _guard = guard;
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(upstream));
            if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
    }
}

/// The answer a mesh hop makes itself: `status` with `ferry-error: <reason>` and a one-line
/// text body on HTTP ports; on gRPC ports a trailers-only response with `grpc_status` and
/// `message`.
pub fn error_response(
    reason: &'static str,
    message: &'static str,
    status: StatusCode,
    grpc_status: Option<u32>,
) -> Response<Body> {
    let builder = Response::builder().header(FERRY_ERROR, reason);
    let (builder, body) = match grpc_status {
        Some(code) => (
            builder
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header("grpc-status", code)
                .header("grpc-message", HeaderValue::from_static(message)),
            Bytes::new(),
        ),
        None => (
            builder
                .status(status)
                .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            Bytes::from(format!("ferry: {message} ({reason})\n")),
        ),
    };
    builder
        .body(Full::new(body).map_err(|never| match never {}).boxed())
        .expect("a valid response")
}

/// The gRPC status of a response's headers (a trailers-only answer), if it names one of
/// the 17 codes.
pub fn grpc_status_of<B>(response: &Response<B>) -> Option<u8> {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u8>().ok())
        .filter(|c| *c <= 16)
}
