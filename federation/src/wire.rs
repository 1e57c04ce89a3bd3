//! Bytes on the wire between clusters: link-stream messages, the join exchange, and the
//! binary header that opens every tunnel stream.
//!
//! Framing is a u32 big-endian length followed by a JSON body; the tunnel header is a small
//! hand-written binary format where every length is checked. This module must not do I/O or
//! trust any length it reads: decoders never allocate more than the bound they enforce.

use std::marker::PhantomData;
use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::Refusal;
use crate::model::{ClusterId, InvalidName, Label, PortName, ServiceName};
pub use crate::model::{ExportedEndpoint, ExportedService};

/// Largest frame body accepted on a link or join stream.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;
/// Largest number of gateway hops a tunnel may take.
pub const MAX_HOPS: u8 = 4;
/// Largest encoded tunnel header.
pub const MAX_HEADER: usize = 1024;

const MAGIC: u8 = b'F';
/// Header without an endpoint: the layout every Ferry speaks.
const VERSION_1: u8 = 1;
/// Header naming one endpoint of a headless service: version 1's fields plus the endpoint.
/// A gateway that only speaks version 1 refuses it instead of ignoring the endpoint.
const VERSION_2: u8 = 2;
/// Version 3: version 2's fields (the endpoint may be empty: none), then one byte saying
/// what the stream carries ([`Carries`]).
const VERSION_3: u8 = 3;

/// Bytes that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A frame announced a body larger than [`MAX_FRAME`].
    #[error(
        "peer sent a {len}-byte frame, more than the {MAX_FRAME}-byte limit; closing the stream"
    )]
    FrameTooLarge {
        /// The announced length.
        len: usize,
    },
    /// A frame body was not a valid message.
    #[error("peer sent a frame that is not a valid message ({0}); check both sides run compatible Ferry versions")]
    BadFrame(String),
    /// The tunnel header did not start with the magic byte.
    #[error("tunnel stream does not start with a Ferry header (first byte {0:#04x}); only Ferry gateways may open tunnels")]
    BadMagic(u8),
    /// A tunnel header version this build does not speak.
    #[error(
        "tunnel header version {0} is not supported (this Ferry speaks 1 and 2); upgrade the older side"
    )]
    UnsupportedVersion(u8),
    /// The tunnel header would exceed [`MAX_HEADER`].
    #[error("tunnel header is longer than {MAX_HEADER} bytes")]
    HeaderTooLarge,
    /// A tunnel header field was not valid.
    #[error("tunnel header field {field} is invalid: {reason}")]
    BadField {
        /// Which field.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The two status bytes were not a known status.
    #[error("tunnel status bytes {0:?} are not a known status")]
    BadStatus([u8; 2]),
}

/// Why a peer says goodbye.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GoodbyeReason {
    /// The link was removed on the sender's side.
    LinkRemoved,
    /// The sender is shutting down (it may come back).
    ShuttingDown,
}

/// A message on the link control stream; see [`crate::link::LinkSync`] for the protocol.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LinkMessage {
    /// First message of a connection.
    Hello {
        /// The sender's cluster.
        cluster: ClusterId,
        /// The sender's session (new on every restart).
        session: u64,
        /// The sender's gateways.
        gateways: Vec<SocketAddr>,
        /// How long the receiver may keep the sender's exports without hearing from it.
        lease_ms: u64,
        /// SHA-256 (hex) of each root in the sender's trust bundle, so each side can tell
        /// whether the two bundles share a root (empty from a sender that does not say).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        roots: Vec<String>,
    },
    /// The sender's complete exports at `seq`.
    Snapshot {
        /// Sequence number of this state.
        seq: u64,
        /// All exports.
        services: Vec<ExportedService>,
    },
    /// The change from `seq - 1` to `seq`.
    Delta {
        /// Sequence number after the change.
        seq: u64,
        /// Services added or changed.
        upserts: Vec<ExportedService>,
        /// Services no longer exported.
        removals: Vec<ServiceName>,
    },
    /// Keeps the lease alive and tells the receiver the sender's current `seq`.
    Heartbeat {
        /// The sender's current sequence number.
        seq: u64,
    },
    /// Asks the receiver for a full Snapshot.
    Resync,
    /// The sender is going away.
    Goodbye {
        /// Why.
        reason: GoodbyeReason,
    },
}

/// A message on the join stream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum JoinMessage {
    /// The joiner presents its token id and proof.
    Request {
        /// The token's id.
        token_id: [u8; 16],
        /// The joining cluster.
        joiner: ClusterId,
        /// [`crate::token::join_proof`] over the channel binding.
        proof: [u8; 32],
        /// The joiner's gateways.
        gateways: Vec<SocketAddr>,
    },
    /// The issuer accepted the join.
    Accepted {
        /// The issuer.
        issuer: ClusterId,
        /// The issuer's gateways.
        gateways: Vec<SocketAddr>,
    },
    /// The issuer refused; `reason` is for the operator.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Frames `msg`: u32 big-endian body length, then the JSON body.
///
/// # Panics
/// If `msg` cannot be serialized to JSON, which never happens for [`LinkMessage`] and
/// [`JoinMessage`].
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("wire messages always serialize to JSON");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Splits a byte stream into frames and decodes them.
///
/// After an error the decoder keeps returning it: the stream must be closed.
#[derive(Debug)]
pub struct FrameDecoder<T = LinkMessage> {
    buf: Vec<u8>,
    failed: Option<WireError>,
    _msg: PhantomData<fn() -> T>,
}

impl<T> Default for FrameDecoder<T> {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            failed: None,
            _msg: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> FrameDecoder<T> {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next complete message, `None` if more bytes are needed.
    #[allow(clippy::should_implement_trait)] // fallible, so not an Iterator
    pub fn next(&mut self) -> Result<Option<T>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(len_bytes) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*len_bytes) as usize;
        if len > MAX_FRAME {
            return Err(self.fail(WireError::FrameTooLarge { len }));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let parsed = serde_json::from_slice(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        match parsed {
            Ok(msg) => Ok(Some(msg)),
            Err(e) => Err(self.fail(WireError::BadFrame(e.to_string()))),
        }
    }

    fn fail(&mut self, e: WireError) -> WireError {
        self.buf = Vec::new();
        self.failed = Some(e.clone());
        e
    }
}

/// What a tunnel stream is for: sent by the calling gateway before any payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelHeader {
    /// The service to reach.
    pub service: ServiceName,
    /// The port, by name.
    pub port: PortName,
    /// The cluster the caller expects to serve it, if it cares.
    pub cluster: Option<ClusterId>,
    /// Gateways crossed so far.
    pub hops: u8,
    /// W3C trace context, if any (dropped on encode if empty or over 255 bytes).
    pub traceparent: Option<String>,
    /// The hostname of the one endpoint of a headless service to reach; `None` lets the
    /// gateway pick any healthy endpoint.
    pub endpoint: Option<Label>,
    /// What the stream carries: bytes to relay, or HTTP requests the gateway may serve one
    /// by one (a node proxy's `http` or `grpc` port).
    pub carries: Carries,
}

/// What a tunnel stream carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Carries {
    /// Opaque bytes: relayed as they are.
    #[default]
    Bytes,
    /// HTTP/1.1 or HTTP/2 requests from a node proxy's L7 port.
    Http,
}

impl TunnelHeader {
    /// Appends the encoded header: `b'F'`, version, hops, then u8-length-prefixed service
    /// name, namespace, port, cluster (0 = none) and traceparent (0 = none). Version 1 ends
    /// there; with an endpoint, the version is 2 and the endpoint's hostname follows
    /// (never empty). A stream carrying HTTP is version 3: the endpoint (0 = none), then
    /// one byte, 1.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let version = match (self.carries, &self.endpoint) {
            (Carries::Http, _) => VERSION_3,
            (Carries::Bytes, None) => VERSION_1,
            (Carries::Bytes, Some(_)) => VERSION_2,
        };
        out.extend_from_slice(&[MAGIC, version, self.hops]);
        put_str(out, self.service.name().as_str());
        put_str(out, self.service.namespace().as_str());
        put_str(out, self.port.as_str());
        put_str(out, self.cluster.as_ref().map_or("", |c| c.as_str()));
        let trace = self
            .traceparent
            .as_deref()
            .filter(|t| t.len() <= 255 && is_trace_text(t))
            .unwrap_or("");
        put_str(out, trace);
        match (version, &self.endpoint) {
            (VERSION_1, _) => {}
            (_, Some(endpoint)) => put_str(out, endpoint.as_str()),
            (_, None) => put_str(out, ""),
        }
        if version == VERSION_3 {
            out.push(CARRIES_HTTP);
        }
    }

    /// Decodes a header from the start of `buf`: `Ok(None)` if more bytes are needed,
    /// otherwise the header and how many bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(TunnelHeader, usize)>, WireError> {
        let mut fields: [&[u8]; 6] = [&[]; 6];
        let Some(&magic) = buf.first() else {
            return Ok(None);
        };
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let Some(&version) = buf.get(1) else {
            return Ok(None);
        };
        let field_count = match version {
            VERSION_1 => 5,
            VERSION_2 | VERSION_3 => 6,
            v => return Err(WireError::UnsupportedVersion(v)),
        };
        let Some(&hops) = buf.get(2) else {
            return Ok(None);
        };
        let mut pos = 3;
        for field in &mut fields[..field_count] {
            let Some(&len) = buf.get(pos) else {
                return Ok(None);
            };
            let end = pos + 1 + len as usize;
            if end > MAX_HEADER {
                return Err(WireError::HeaderTooLarge);
            }
            let Some(bytes) = buf.get(pos + 1..end) else {
                return Ok(None);
            };
            *field = bytes;
            pos = end;
        }
        let [name, namespace, port, cluster, trace, endpoint] = fields;
        let bad = |field: &'static str| {
            move |e: InvalidName| WireError::BadField {
                field,
                reason: e.to_string(),
            }
        };
        let service = ServiceName::new(
            Label::new(text("service", name)?).map_err(bad("service"))?,
            Label::new(text("namespace", namespace)?).map_err(bad("namespace"))?,
        );
        let port = PortName::new(text("port", port)?).map_err(bad("port"))?;
        let cluster = match cluster {
            [] => None,
            c => Some(ClusterId::new(text("cluster", c)?).map_err(bad("cluster"))?),
        };
        let traceparent = match trace {
            [] => None,
            t => {
                let t = text("traceparent", t)?;
                if !is_trace_text(t) {
                    return Err(WireError::BadField {
                        field: "traceparent",
                        reason: "must be printable ASCII".into(),
                    });
                }
                Some(t.to_owned())
            }
        };
        let carries = match version {
            VERSION_3 => {
                let Some(&byte) = buf.get(pos) else {
                    return Ok(None);
                };
                pos += 1;
                match byte {
                    CARRIES_HTTP => Carries::Http,
                    _ => {
                        return Err(WireError::BadField {
                            field: "carries",
                            reason: format!("{byte} is not a stream kind this gateway knows"),
                        })
                    }
                }
            }
            _ => Carries::Bytes,
        };
        let endpoint = match (version, endpoint) {
            (VERSION_1, _) | (VERSION_3, []) => None,
            (_, []) => {
                return Err(WireError::BadField {
                    field: "endpoint",
                    reason: "empty in a version 2 header; name the endpoint or send version 1"
                        .into(),
                })
            }
            (_, e) => Some(Label::new(text("endpoint", e)?).map_err(bad("endpoint"))?),
        };
        let header = TunnelHeader {
            service,
            port,
            cluster,
            hops,
            traceparent,
            endpoint,
            carries,
        };
        Ok(Some((header, pos)))
    }
}

/// The version 3 byte for a stream of HTTP requests.
const CARRIES_HTTP: u8 = 1;

fn text<'a>(field: &'static str, b: &'a [u8]) -> Result<&'a str, WireError> {
    std::str::from_utf8(b).map_err(|_| WireError::BadField {
        field,
        reason: "not UTF-8".into(),
    })
}

fn is_trace_text(t: &str) -> bool {
    t.bytes().all(|b| b.is_ascii_graphic())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Every caller passes a validated name (<= 63 bytes) or a checked traceparent (<= 255).
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// The gateway's two-byte answer to a tunnel header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelStatus {
    /// Admitted; payload follows.
    Ok,
    /// Refused; the stream is closed.
    Refused(Refusal),
}

impl TunnelStatus {
    /// `[0, 0]` for Ok, `[1, code]` for a refusal.
    pub fn encode(&self) -> [u8; 2] {
        match self {
            TunnelStatus::Ok => [0, 0],
            TunnelStatus::Refused(r) => [1, r.code()],
        }
    }

    /// The inverse of [`TunnelStatus::encode`].
    pub fn decode(bytes: [u8; 2]) -> Result<TunnelStatus, WireError> {
        match bytes {
            [0, 0] => Ok(TunnelStatus::Ok),
            [1, code] => Refusal::from_code(code)
                .map(TunnelStatus::Refused)
                .ok_or(WireError::BadStatus(bytes)),
            _ => Err(WireError::BadStatus(bytes)),
        }
    }
}

#[cfg(test)]
mod tests;
