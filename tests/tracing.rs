//! One cross-cluster call is one trace: the caller's node proxy continues the client's
//! `traceparent`, the tunnel header carries the proxy's span to the remote gateway, and
//! both clusters export their spans over OTLP/gRPC to a real receiver (a small server on
//! the official `opentelemetry-proto` and `grpcio` Python packages).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

struct Receiver {
    child: Child,
    out: std::path::PathBuf,
    port: u16,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_receiver(dir: &std::path::Path) -> Receiver {
    let out = dir.join("spans.jsonl");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp_receiver.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(&out)
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs (.ci/run installs opentelemetry-proto and grpcio)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the OTLP receiver did not start: {line:?}"))
        .parse()
        .unwrap();
    Receiver { child, out, port }
}

fn spans(r: &Receiver) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&r.out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cross_cluster_call_is_one_trace_with_spans_from_both_clusters() {
    let mesh = Mesh::new("example.org");
    let receiver = start_receiver(mesh.path());
    let east_def = mesh.cluster("east", "127.87.0.0/16");
    let west_def = mesh.cluster("west", "127.88.0.0/16");
    for def in [&east_def, &west_def] {
        def.append_config(&format!(
            "\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{}\"\n",
            receiver.port
        ));
    }
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let web = common::http::HttpBackend::start("west", false).await;
    common::http::add_web(&west_def, &[&web], true);
    link(&east_def, &west_def);
    east_def.wait_imported("web.shop", "west").await;
    let vip = east_def.vip("web.shop", 8080);

    // Two calls, each in its own client trace; the second rides the tunnel stream the
    // first one opened (the node proxy pools it), so only the gateway's per-request span
    // can put west into its trace.
    let traces = [
        ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
        ("5c0a1f3577b34da6a3ce929d0e0e4799", "11f067aa0ba902c8"),
    ];
    for (trace, client_span) in traces {
        let (status, _) = common::http::get_with_headers(
            vip,
            "/",
            &[&format!("traceparent: 00-{trace}-{client_span}-01")],
        )
        .await
        .expect("the call answers");
        assert_eq!(status, 200);
    }
    for (i, (trace, client_span)) in traces.into_iter().enumerate() {
        let of_trace = wait_for_both_clusters(&receiver, trace, &east_def).await;
        // East's request span is the client span's child; west's request span is a child
        // of a span in east; every span is called ferry.
        let request = of_trace
            .iter()
            .find(|s| s["cluster"] == "east" && s["name"] == "request")
            .unwrap_or_else(|| panic!("no request span in east: {of_trace:#?}"));
        assert_eq!(request["parent_span_id"], client_span);
        let east_ids: Vec<&serde_json::Value> = of_trace
            .iter()
            .filter(|s| s["cluster"] == "east")
            .map(|s| &s["span_id"])
            .collect();
        let west_request = of_trace
            .iter()
            .find(|s| s["cluster"] == "west" && s["name"] == "request")
            .unwrap_or_else(|| panic!("call {i}: no request span in west: {of_trace:#?}"));
        assert!(
            east_ids.contains(&&west_request["parent_span_id"]),
            "call {i}: {of_trace:#?}"
        );
        if i == 0 {
            // The call that opened the stream also has west's stream (admission) span.
            let stream = of_trace
                .iter()
                .find(|s| s["cluster"] == "west" && s["name"] == "stream")
                .unwrap_or_else(|| panic!("no stream span in west: {of_trace:#?}"));
            assert!(
                east_ids.contains(&&stream["parent_span_id"]),
                "{of_trace:#?}"
            );
        }
        assert!(of_trace.iter().all(|s| s["service"] == "ferry"));
    }
}

/// The spans of `trace` once both clusters have sent some (fails after 20 s).
async fn wait_for_both_clusters(
    receiver: &Receiver,
    trace: &str,
    east_def: &common::ClusterDef,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let of_trace: Vec<_> = spans(receiver)
            .into_iter()
            .filter(|s| s["trace_id"] == trace)
            .collect();
        let from = |c: &str| {
            of_trace
                .iter()
                .any(|s| s["cluster"] == c && s["name"] == "request")
        };
        if from("east") && from("west") {
            return of_trace;
        }
        let received: Vec<String> = spans(receiver)
            .iter()
            .map(|s| {
                format!(
                    "{} {} {} {}",
                    s["cluster"], s["name"], s["trace_id"], s["parent_span_id"]
                )
            })
            .collect();
        assert!(
            std::time::Instant::now() < deadline,
            "no request spans of trace {trace} from both clusters in 20 s; received: {received:#?}\nraw: {:?} {:?}\neast config:\n{}",
            std::fs::read_to_string(&receiver.out),
            receiver.out,
            std::fs::read_to_string(&east_def.config).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
