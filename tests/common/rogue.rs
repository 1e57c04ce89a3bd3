//! A misbehaving peer: a test client holding a real gateway certificate of its own linked
//! cluster, speaking the link protocol with whatever messages the test writes.

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_federation::{encode_frame, ClusterId, LinkMessage};
use ferry_gateway::tls::{self, IdentityStore, PeerExpectation, TrustStore};

use super::ClusterDef;

/// A link connection to another cluster's gateway, opened as `def`'s gateway.
pub struct RoguePeer {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    _endpoint: quinn::Endpoint,
}

/// A gateway certificate of `def`'s cluster, issued by its running control plane.
pub async fn gateway_identity(def: &ClusterDef) -> (Arc<IdentityStore>, Arc<TrustStore>) {
    def.identity("gateway", "").await
}

impl RoguePeer {
    /// Dials `target`'s gateway at `addr` with the link ALPN and opens the control stream.
    pub async fn connect(
        identity: (Arc<IdentityStore>, Arc<TrustStore>),
        target: &str,
        addr: SocketAddr,
    ) -> RoguePeer {
        let target: ClusterId = target.parse().unwrap();
        let config = tls::client_config(
            identity.0,
            identity.1,
            PeerExpectation::Gateway(target),
            tls::ALPN_LINK,
        )
        .unwrap();
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = endpoint
            .connect_with(config, addr, tls::SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        RoguePeer {
            conn,
            send,
            recv,
            _endpoint: endpoint,
        }
    }

    /// Introduces itself as the rogue cluster announcing `gateways`.
    pub async fn hello(&mut self, gateways: Vec<SocketAddr>) {
        let hello = LinkMessage::Hello {
            cluster: "rogue".parse().unwrap(),
            session: 7,
            gateways,
            lease_ms: 5000,
            roots: vec![],
        };
        assert!(
            self.send(&hello).await,
            "the gateway closed the link at hello"
        );
    }

    /// Sends one framed message; false once the gateway has closed the stream.
    pub async fn send(&mut self, msg: &LinkMessage) -> bool {
        self.send.write_all(&encode_frame(msg)).await.is_ok()
    }
}
