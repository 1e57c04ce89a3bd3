//! Link tokens (`ferry-link-v1.…`), join proofs and trust-bundle fingerprints.
//!
//! A link token is what an operator copies from one cluster to another to link them. This
//! module encodes and decodes it (with a checksum that catches copy/paste damage) and computes
//! the HMAC proof a joiner presents. It must not read the clock or randomness: expiry time,
//! token ids and secrets are passed in. It does not check the token against any store.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::{digest, hmac};

use crate::model::{shorten, ClusterId, InvalidName, TrustDomain};

/// Every v1 token starts with this.
pub const TOKEN_PREFIX: &str = "ferry-link-v1.";
const FAMILY_PREFIX: &str = "ferry-link-";
const CHECKSUM_LEN: usize = 8;
const JOIN_CONTEXT: &[u8] = b"ferry-join-v1";

/// A link token could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The text does not start with `ferry-link-`.
    #[error(
        "this is not a Ferry link token (it must start with `ferry-link-v1.`); \
         copy the whole token printed by `ferry link create`"
    )]
    NotAToken,
    /// A token of another format version.
    #[error(
        "link token version {0:?} is not supported (this Ferry reads v1); \
         create the token with `ferry link create` on a cluster running a matching Ferry version"
    )]
    UnsupportedVersion(String),
    /// The body is not base64url.
    #[error(
        "the link token is not valid base64url; copy it again without line breaks, \
         spaces or extra characters"
    )]
    Encoding,
    /// The checksum does not match.
    #[error(
        "the link token was modified or truncated; copy it again or ask the issuing cluster \
         for a new one with `ferry link create`"
    )]
    Corrupted,
    /// The checksum matched but the content is not a valid token.
    #[error(
        "the link token is malformed ({0}); ask the issuing cluster for a new one with \
         `ferry link create`"
    )]
    Malformed(String),
}

/// What one cluster hands another so that it can join: where to connect, what trust bundle to
/// expect, and a one-time secret to prove possession of the token.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkToken {
    /// The cluster that issued the token.
    pub issuer: ClusterId,
    /// The issuer's trust domain.
    pub trust_domain: TrustDomain,
    /// The cluster the token is meant for.
    pub peer: ClusterId,
    /// The issuer's gateway addresses (at most 255 are encoded).
    pub gateways: Vec<SocketAddr>,
    /// [`bundle_fingerprint`] of the issuer's trust bundle.
    pub bundle_fingerprint: [u8; 32],
    /// The token's id, by which the issuer finds the secret.
    pub id: [u8; 16],
    /// The shared secret for [`join_proof`].
    pub secret: [u8; 32],
    /// Unix seconds after which the token is refused.
    pub expires_at_unix: u64,
}

impl fmt::Debug for LinkToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkToken")
            .field("issuer", &self.issuer)
            .field("trust_domain", &self.trust_domain)
            .field("peer", &self.peer)
            .field("gateways", &self.gateways)
            .field(
                "bundle_fingerprint",
                &fingerprint_hex(&self.bundle_fingerprint),
            )
            .field("id", &hex(&self.id))
            .field("secret", &"<redacted>")
            .field("expires_at_unix", &self.expires_at_unix)
            .finish()
    }
}

impl LinkToken {
    /// `ferry-link-v1.` + base64url (no padding) of the payload followed by the first 8 bytes
    /// of its SHA-256.
    pub fn encode(&self) -> String {
        let mut buf = Vec::with_capacity(256);
        put_str(&mut buf, self.issuer.as_str());
        put_str(&mut buf, self.trust_domain.as_str());
        put_str(&mut buf, self.peer.as_str());
        let gateways = &self.gateways[..self.gateways.len().min(255)];
        buf.push(gateways.len() as u8);
        for g in gateways {
            match g.ip() {
                IpAddr::V4(ip) => {
                    buf.push(4);
                    buf.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    buf.push(6);
                    buf.extend_from_slice(&ip.octets());
                }
            }
            buf.extend_from_slice(&g.port().to_be_bytes());
        }
        buf.extend_from_slice(&self.bundle_fingerprint);
        buf.extend_from_slice(&self.id);
        buf.extend_from_slice(&self.secret);
        buf.extend_from_slice(&self.expires_at_unix.to_be_bytes());
        let sum = digest::digest(&digest::SHA256, &buf);
        buf.extend_from_slice(&sum.as_ref()[..CHECKSUM_LEN]);
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(&buf))
    }

    /// Reads a token, ignoring surrounding whitespace.
    pub fn decode(s: &str) -> Result<LinkToken, TokenError> {
        let s = s.trim();
        let rest = s.strip_prefix(FAMILY_PREFIX).ok_or(TokenError::NotAToken)?;
        let (version, body) = rest.split_once('.').ok_or(TokenError::NotAToken)?;
        if version != "v1" {
            return Err(TokenError::UnsupportedVersion(shorten(version)));
        }
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Encoding)?;
        if raw.len() < CHECKSUM_LEN {
            return Err(TokenError::Corrupted);
        }
        let (payload, sum) = raw.split_at(raw.len() - CHECKSUM_LEN);
        if digest::digest(&digest::SHA256, payload).as_ref()[..CHECKSUM_LEN] != *sum {
            return Err(TokenError::Corrupted);
        }
        parse_payload(payload)
    }

    /// Whether the token is past its expiry at `now_unix` (unix seconds).
    pub fn is_expired(&self, now_unix: u64) -> bool {
        now_unix >= self.expires_at_unix
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    // Names are validated to at most 255 bytes, so the length always fits.
    buf.push(s.len() as u8);
    buf.extend_from_slice(s.as_bytes());
}

/// A bounds-checked cursor over the payload.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], TokenError> {
        if self.buf.len() < n {
            return Err(TokenError::Malformed(format!("{what} is cut short")));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], TokenError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, TokenError> {
        Ok(self.take(1, what)?[0])
    }

    fn str(&mut self, what: &str) -> Result<&'a str, TokenError> {
        let len = self.u8(what)? as usize;
        std::str::from_utf8(self.take(len, what)?)
            .map_err(|_| TokenError::Malformed(format!("{what} is not UTF-8")))
    }
}

fn parse_payload(payload: &[u8]) -> Result<LinkToken, TokenError> {
    let mut r = Reader { buf: payload };
    let bad =
        |what: &'static str| move |e: InvalidName| TokenError::Malformed(format!("{what}: {e}"));
    let issuer = ClusterId::new(r.str("issuer")?).map_err(bad("issuer"))?;
    let trust_domain = TrustDomain::new(r.str("trust domain")?).map_err(bad("trust domain"))?;
    let peer = ClusterId::new(r.str("peer")?).map_err(bad("peer"))?;
    let count = r.u8("gateway count")?;
    let mut gateways = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let ip = match r.u8("gateway address")? {
            4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("gateway address")?)),
            6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("gateway address")?)),
            other => {
                return Err(TokenError::Malformed(format!(
                    "unknown gateway address family {other}"
                )))
            }
        };
        let port = u16::from_be_bytes(r.array::<2>("gateway port")?);
        gateways.push(SocketAddr::new(ip, port));
    }
    let bundle_fingerprint = r.array::<32>("bundle fingerprint")?;
    let id = r.array::<16>("token id")?;
    let secret = r.array::<32>("secret")?;
    let expires_at_unix = u64::from_be_bytes(r.array::<8>("expiry")?);
    if !r.buf.is_empty() {
        return Err(TokenError::Malformed(format!(
            "{} unexpected bytes at the end",
            r.buf.len()
        )));
    }
    Ok(LinkToken {
        issuer,
        trust_domain,
        peer,
        gateways,
        bundle_fingerprint,
        id,
        secret,
        expires_at_unix,
    })
}

fn join_message(channel_binding: &[u8], joiner: &ClusterId) -> Vec<u8> {
    let mut msg = Vec::with_capacity(JOIN_CONTEXT.len() + 8 + channel_binding.len() + 64);
    msg.extend_from_slice(JOIN_CONTEXT);
    msg.extend_from_slice(&(channel_binding.len() as u64).to_be_bytes());
    msg.extend_from_slice(channel_binding);
    msg.extend_from_slice(joiner.as_str().as_bytes());
    msg
}

/// HMAC-SHA256 keyed by the token secret over `"ferry-join-v1" || u64 BE len(binding) ||
/// binding || joiner`. Binding the TLS channel stops a proof being replayed on another
/// connection.
pub fn join_proof(secret: &[u8; 32], channel_binding: &[u8], joiner: &ClusterId) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, &join_message(channel_binding, joiner));
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Checks a [`join_proof`] in constant time.
pub fn verify_join_proof(
    secret: &[u8; 32],
    channel_binding: &[u8],
    joiner: &ClusterId,
    proof: &[u8],
) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &join_message(channel_binding, joiner), proof).is_ok()
}

/// SHA-256 over the DER roots, sorted and each prefixed by its u32 BE length, so the result
/// does not depend on the order the roots are listed in.
pub fn bundle_fingerprint(roots_der: &[Vec<u8>]) -> [u8; 32] {
    let mut sorted: Vec<&Vec<u8>> = roots_der.iter().collect();
    sorted.sort();
    let mut ctx = digest::Context::new(&digest::SHA256);
    for root in sorted {
        ctx.update(&(root.len() as u32).to_be_bytes());
        ctx.update(root);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `sha256:` followed by the fingerprint in lowercase hex.
pub fn fingerprint_hex(fp: &[u8; 32]) -> String {
    format!("sha256:{}", hex(fp))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests;
