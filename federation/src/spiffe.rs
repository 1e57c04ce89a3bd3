//! SPIFFE IDs and the identities Ferry gives them.
//!
//! Parses `spiffe://<trust-domain>/<path>` strictly (per the SPIFFE ID standard) and maps the
//! few path shapes Ferry issues onto [`Identity`]. It must not look at certificates or do any
//! chain validation: the shells' verifiers extract the URI SAN and then call into here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::{shorten, ClusterId, InvalidName, NodeName, TrustDomain};

/// The longest SPIFFE ID accepted, in bytes.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

const SCHEME: &str = "spiffe://";
const SHAPES: &str =
    "/cluster/<cluster>/gateway, /cluster/<cluster>/node/<node> or /cluster/<cluster>";

/// A SPIFFE ID that is malformed, or not one Ferry issues.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpiffeId {
    /// Longer than [`MAX_SPIFFE_ID_LEN`].
    #[error("SPIFFE ID is {len} bytes long; at most 2048 are allowed")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Did not start with `spiffe://`.
    #[error("{id:?} is not a SPIFFE ID; it must start with spiffe:// (lowercase)")]
    WrongScheme {
        /// The (shortened) input.
        id: String,
    },
    /// The trust domain part was missing.
    #[error("SPIFFE ID {id:?} has no trust domain; write spiffe://<trust-domain>/<path>")]
    MissingTrustDomain {
        /// The (shortened) input.
        id: String,
    },
    /// The authority carried a port or user info.
    #[error("SPIFFE ID {id:?} has a port or user info in its trust domain; remove it")]
    PortOrUserInfo {
        /// The (shortened) input.
        id: String,
    },
    /// A query or fragment was present.
    #[error("SPIFFE ID {id:?} has a query or fragment; remove everything from '?' or '#'")]
    QueryOrFragment {
        /// The (shortened) input.
        id: String,
    },
    /// The trust domain broke its rules.
    #[error("SPIFFE ID trust domain is invalid: {0}")]
    TrustDomain(#[source] InvalidName),
    /// A path segment was empty (`//` or a trailing `/`).
    #[error("SPIFFE ID {id:?} has an empty path segment (a doubled or trailing '/'); remove it")]
    EmptySegment {
        /// The (shortened) input.
        id: String,
    },
    /// A path segment was `.` or `..`.
    #[error("SPIFFE ID {id:?} has a '.' or '..' path segment, which is not allowed")]
    DotSegment {
        /// The (shortened) input.
        id: String,
    },
    /// A path character outside `[a-zA-Z0-9.-_]`.
    #[error("SPIFFE ID {id:?} contains {ch:?} in its path; only a-z, A-Z, 0-9, '.', '-' and '_' are allowed")]
    BadPathChar {
        /// The (shortened) input.
        id: String,
        /// The first offending character.
        ch: char,
    },
    /// The ID belongs to another trust domain than the one expected.
    #[error("SPIFFE ID {id} is in trust domain {got}, but this mesh uses {expected}")]
    WrongTrustDomain {
        /// The ID.
        id: String,
        /// The trust domain expected.
        expected: TrustDomain,
        /// The trust domain found.
        got: TrustDomain,
    },
    /// The path is not one of the shapes Ferry issues.
    #[error("SPIFFE ID {id} is not a Ferry identity; expected a path of the form {SHAPES}")]
    UnexpectedPath {
        /// The ID.
        id: String,
    },
    /// A cluster or node name in the path was invalid.
    #[error("SPIFFE ID {id} names an invalid cluster or node: {source}")]
    BadName {
        /// The ID.
        id: String,
        /// What was wrong with the name.
        source: InvalidName,
    },
}

/// A parsed, valid SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    /// Empty, or `/seg(/seg)*`.
    path: String,
}

impl SpiffeId {
    /// Parses `s` per the SPIFFE ID standard.
    pub fn parse(s: &str) -> Result<SpiffeId, InvalidSpiffeId> {
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(InvalidSpiffeId::TooLong { len: s.len() });
        }
        let id = || shorten(s);
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| InvalidSpiffeId::WrongScheme { id: id() })?;
        if rest.contains(['?', '#']) {
            return Err(InvalidSpiffeId::QueryOrFragment { id: id() });
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(InvalidSpiffeId::MissingTrustDomain { id: id() });
        }
        if authority.contains([':', '@']) {
            return Err(InvalidSpiffeId::PortOrUserInfo { id: id() });
        }
        let trust_domain = TrustDomain::new(authority).map_err(InvalidSpiffeId::TrustDomain)?;
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                if seg.is_empty() {
                    return Err(InvalidSpiffeId::EmptySegment { id: id() });
                }
                if seg == "." || seg == ".." {
                    return Err(InvalidSpiffeId::DotSegment { id: id() });
                }
                if let Some(ch) = seg
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
                {
                    return Err(InvalidSpiffeId::BadPathChar { id: id(), ch });
                }
            }
        }
        Ok(SpiffeId {
            trust_domain,
            path: path.to_owned(),
        })
    }

    /// Builds an ID from a trust domain and already-valid path segments.
    fn from_segments(trust_domain: &TrustDomain, segments: &[&str]) -> SpiffeId {
        let mut path = String::new();
        for s in segments {
            path.push('/');
            path.push_str(s);
        }
        SpiffeId {
            trust_domain: trust_domain.clone(),
            path,
        }
    }

    /// The trust domain (the URI's authority).
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path: empty for a trust domain's own ID, otherwise starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}{}", self.trust_domain, self.path)
    }
}

impl FromStr for SpiffeId {
    type Err = InvalidSpiffeId;
    fn from_str(s: &str) -> Result<Self, InvalidSpiffeId> {
        SpiffeId::parse(s)
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = InvalidSpiffeId;
    fn try_from(s: String) -> Result<Self, InvalidSpiffeId> {
        SpiffeId::parse(&s)
    }
}

impl From<SpiffeId> for String {
    fn from(v: SpiffeId) -> String {
        v.to_string()
    }
}

/// Who a peer is, as far as Ferry is concerned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// A cluster's gateway: `/cluster/<c>/gateway`.
    Gateway {
        /// Its cluster.
        cluster: ClusterId,
    },
    /// A node proxy: `/cluster/<c>/node/<n>`.
    Node {
        /// Its cluster.
        cluster: ClusterId,
        /// The node.
        node: NodeName,
    },
    /// A cluster's CA: `/cluster/<c>`.
    ClusterCa {
        /// Its cluster.
        cluster: ClusterId,
    },
}

impl Identity {
    /// Maps `id` to an identity, refusing other trust domains and unknown path shapes.
    pub fn from_spiffe(id: &SpiffeId, expected: &TrustDomain) -> Result<Identity, InvalidSpiffeId> {
        if id.trust_domain() != expected {
            return Err(InvalidSpiffeId::WrongTrustDomain {
                id: id.to_string(),
                expected: expected.clone(),
                got: id.trust_domain().clone(),
            });
        }
        let unexpected = || InvalidSpiffeId::UnexpectedPath { id: id.to_string() };
        let bad_name = |source| InvalidSpiffeId::BadName {
            id: id.to_string(),
            source,
        };
        let path = id.path().strip_prefix('/').ok_or_else(unexpected)?;
        let segments: Vec<&str> = path.split('/').collect();
        match segments.as_slice() {
            ["cluster", c] => Ok(Identity::ClusterCa {
                cluster: ClusterId::new(*c).map_err(bad_name)?,
            }),
            ["cluster", c, "gateway"] => Ok(Identity::Gateway {
                cluster: ClusterId::new(*c).map_err(bad_name)?,
            }),
            ["cluster", c, "node", n] => Ok(Identity::Node {
                cluster: ClusterId::new(*c).map_err(bad_name)?,
                node: NodeName::new(*n).map_err(bad_name)?,
            }),
            _ => Err(unexpected()),
        }
    }

    /// The SPIFFE ID Ferry issues for this identity in trust domain `td`.
    pub fn spiffe_id(&self, td: &TrustDomain) -> SpiffeId {
        match self {
            Identity::Gateway { cluster } => {
                SpiffeId::from_segments(td, &["cluster", cluster.as_str(), "gateway"])
            }
            Identity::Node { cluster, node } => {
                SpiffeId::from_segments(td, &["cluster", cluster.as_str(), "node", node.as_str()])
            }
            Identity::ClusterCa { cluster } => {
                SpiffeId::from_segments(td, &["cluster", cluster.as_str()])
            }
        }
    }

    /// The cluster the identity belongs to.
    pub fn cluster(&self) -> &ClusterId {
        match self {
            Identity::Gateway { cluster }
            | Identity::Node { cluster, .. }
            | Identity::ClusterCa { cluster } => cluster,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Gateway { cluster } => write!(f, "gateway of {cluster}"),
            Identity::Node { cluster, node } => write!(f, "node {node} of {cluster}"),
            Identity::ClusterCa { cluster } => write!(f, "cluster CA of {cluster}"),
        }
    }
}

#[cfg(test)]
mod tests;
