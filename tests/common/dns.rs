//! A small DNS client for the tests: real packets over UDP and TCP, and real `dig`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How a query is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A query for `name`/`rtype`, optionally with EDNS (payload 1232).
pub fn query(name: &str, rtype: RecordType, edns: bool) -> Message {
    let mut m = Message::query();
    let mut q = Query::query(Name::from_ascii(name).unwrap(), rtype);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    m.metadata.recursion_desired = true;
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

/// Sends raw bytes and returns the raw reply, or `None` when nothing came back in `wait`.
pub async fn exchange_raw(
    server: SocketAddr,
    bytes: &[u8],
    transport: Transport,
    wait: Duration,
) -> Option<Vec<u8>> {
    let io = async {
        match transport {
            Transport::Udp => {
                let sock = UdpSocket::bind("127.0.0.1:0").await.ok()?;
                sock.send_to(bytes, server).await.ok()?;
                let mut buf = vec![0u8; 65535];
                let (n, _) = sock.recv_from(&mut buf).await.ok()?;
                buf.truncate(n);
                Some(buf)
            }
            Transport::Tcp => {
                let mut s = TcpStream::connect(server).await.ok()?;
                let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(bytes);
                s.write_all(&framed).await.ok()?;
                let len = s.read_u16().await.ok()?;
                let mut buf = vec![0u8; usize::from(len)];
                s.read_exact(&mut buf).await.ok()?;
                Some(buf)
            }
        }
    };
    tokio::time::timeout(wait, io).await.ok().flatten()
}

/// Sends `msg` and decodes the reply; panics when none comes within 3 s.
pub async fn ask(server: SocketAddr, msg: &Message, transport: Transport) -> Message {
    let raw = exchange_raw(
        server,
        &msg.to_vec().unwrap(),
        transport,
        Duration::from_secs(3),
    )
    .await
    .unwrap_or_else(|| panic!("no {transport:?} reply from {server} to {:?}", msg.queries));
    let reply = Message::from_vec(&raw).unwrap();
    assert_eq!(reply.metadata.id, msg.metadata.id, "reply ID matches");
    reply
}

/// The A record addresses in a reply, as strings.
pub fn addresses(reply: &Message) -> Vec<String> {
    reply
        .answers
        .iter()
        .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
        .map(|r| r.data.to_string())
        .collect()
}

/// Runs real `dig` against `server` with `args`; returns stdout.
pub fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig is installed (.ci/run installs dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
