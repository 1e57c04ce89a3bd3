//! The TCP ↔ QUIC stream relay over a real quinn connection with Ferry's mTLS: every byte
//! arrives in order both ways across chunk and buffer boundaries, half-closes pass on, and
//! a failure on one side reaches the other as a reset, never as a clean end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferry_federation::{ClusterId, Identity, TrustDomain};
use ferry_gateway::pki::{create_cluster_ca, create_root, issue_leaf, new_leaf_request, Ca};
use ferry_gateway::relay::{relay_quic, RelayEnd, STREAM_CUT};
use ferry_gateway::tls::{
    client_config, server_config, IdentityStore, PeerExpectation, TrustStore, ALPN_TUNNEL,
    SERVER_NAME,
};
use quinn::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const DAY: Duration = Duration::from_secs(24 * 3600);
const DEADLINE: Duration = Duration::from_secs(20);

fn td() -> TrustDomain {
    "ferry.test".parse().unwrap()
}

fn cluster(c: &str) -> ClusterId {
    c.parse().unwrap()
}

/// A node of `east` connected to the gateway of `west`, as a tunnel is.
async fn quic_pair() -> (quinn::Connection, quinn::Connection, [Endpoint; 2]) {
    let start = SystemTime::now() - DAY;
    let root = create_root(&td(), start, 30 * DAY).unwrap();
    let root_ca = Ca::from_pem(&root.cert_pem, &root.key_pem).unwrap();
    let trust = Arc::new(TrustStore::from_pem(td(), &root.cert_pem).unwrap());
    let leaf = |identity: Identity| {
        let ca = create_cluster_ca(&root_ca, identity.cluster(), start, 30 * DAY).unwrap();
        let ca = Ca::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let request = new_leaf_request().unwrap();
        let issued = issue_leaf(&ca, &identity, &request.csr_pem, start, 2 * DAY).unwrap();
        Arc::new(IdentityStore::from_pem(&issued.chain_pem, &request.key_pem, &td()).unwrap())
    };
    let server = server_config(
        leaf(Identity::Gateway {
            cluster: cluster("west"),
        }),
        trust.clone(),
        &[ALPN_TUNNEL],
    )
    .unwrap();
    let client = client_config(
        leaf(Identity::Node {
            cluster: cluster("east"),
            node: "n1".parse().unwrap(),
        }),
        trust,
        PeerExpectation::Gateway(cluster("west")),
        ALPN_TUNNEL,
    )
    .unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server_ep = Endpoint::server(server, any).unwrap();
    let addr = server_ep.local_addr().unwrap();
    let client_ep = Endpoint::client(any).unwrap();
    let accept = async { server_ep.accept().await.unwrap().await.unwrap() };
    let connect = async {
        client_ep
            .connect_with(client, addr, SERVER_NAME)
            .unwrap()
            .await
            .unwrap()
    };
    let (server, client) = tokio::time::timeout(DEADLINE, async { tokio::join!(accept, connect) })
        .await
        .expect("handshake in time");
    (client, server, [client_ep, server_ep])
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (a.unwrap(), b.unwrap().0)
}

/// An application's TCP connection relayed onto a QUIC stream: (the application's end,
/// the far end of the stream, the relay).
async fn relayed() -> (
    TcpStream,
    (quinn::SendStream, quinn::RecvStream),
    JoinHandle<RelayEnd>,
    (quinn::Connection, [Endpoint; 2]),
) {
    let (client, server, endpoints) = quic_pair().await;
    let (app, mut near) = tcp_pair().await;
    let (mut send, mut recv) = client.open_bi().await.unwrap();
    // A stream is only announced to the peer once something is sent on it.
    send.write_all(b"h").await.unwrap();
    let (far_send, mut far_recv) = server.accept_bi().await.unwrap();
    let mut header = [0u8; 1];
    far_recv.read_exact(&mut header).await.unwrap();
    let relay = tokio::spawn(async move {
        relay_quic(
            &mut near,
            &mut send,
            &mut recv,
            Duration::from_secs(30),
            &ferry_gateway::relay::Meter::default(),
        )
        .await
    });
    // The connection outlives the relay, as a pooled one does.
    (app, (far_send, far_recv), relay, (client, endpoints))
}

async fn ended(relay: JoinHandle<RelayEnd>) -> RelayEnd {
    tokio::time::timeout(DEADLINE, relay)
        .await
        .expect("the relay ends in time")
        .unwrap()
}

fn message(i: usize, size: usize) -> Vec<u8> {
    (0..size).map(|j| ((i * 31 + j) % 251) as u8).collect()
}

#[tokio::test]
async fn every_byte_arrives_in_order_both_ways_and_half_closes_pass_on() {
    let (mut app, (mut far_send, mut far_recv), relay, _keep) = relayed().await;
    let sizes = [
        1, 1_199, 1_200, 70_000, 5, 16_384, 65_536, 65_537, 2_000_000, 3,
    ];
    let mut sent = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        let out = message(i, size);
        app.write_all(&out).await.unwrap();
        let mut got = vec![0u8; size];
        far_recv.read_exact(&mut got).await.unwrap();
        assert!(
            got == out,
            "message {i} ({size} B) arrived intact over QUIC"
        );
        far_send.write_all(&out).await.unwrap();
        let mut back = vec![0u8; size];
        app.read_exact(&mut back).await.unwrap();
        assert!(back == out, "answer {i} ({size} B) arrived intact over TCP");
        sent += size as u64;
    }
    // The application half-closes: the stream finishes, and the answer still flows.
    app.shutdown().await.unwrap();
    let rest = far_recv.read_to_end(1 << 20).await.unwrap();
    assert!(rest.is_empty());
    far_send.write_all(b"last words").await.unwrap();
    far_send.finish().unwrap();
    let mut tail = Vec::new();
    app.read_to_end(&mut tail).await.unwrap();
    assert_eq!(tail, b"last words");
    match ended(relay).await {
        RelayEnd::Done(up, down) => assert_eq!((up, down), (sent, sent + 10)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_application_reset_reaches_the_far_end_as_a_stream_reset() {
    let (app, (_far_send, mut far_recv), relay, _keep) = relayed().await;
    let mut app = app;
    app.write_all(b"partial upload").await.unwrap();
    let mut got = [0u8; 14];
    far_recv.read_exact(&mut got).await.unwrap();
    app.set_zero_linger().unwrap();
    drop(app);
    let end = tokio::time::timeout(DEADLINE, far_recv.read_to_end(1 << 20))
        .await
        .unwrap();
    match end {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            assert_eq!(code, STREAM_CUT)
        }
        other => panic!("a cut upload must not look complete: {other:?}"),
    }
    assert!(matches!(ended(relay).await, RelayEnd::Failed(_)));
}

#[tokio::test]
async fn a_stream_reset_reaches_the_application_as_a_tcp_reset() {
    let (mut app, (mut far_send, _far_recv), relay, _keep) = relayed().await;
    far_send.write_all(b"partial download").await.unwrap();
    let mut got = [0u8; 16];
    app.read_exact(&mut got).await.unwrap();
    far_send.reset(quinn::VarInt::from_u32(7)).unwrap();
    assert!(matches!(ended(relay).await, RelayEnd::Failed(_)));
    let mut rest = Vec::new();
    let end = tokio::time::timeout(DEADLINE, app.read_to_end(&mut rest))
        .await
        .unwrap();
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "a cut download must not look complete"
    );
}
