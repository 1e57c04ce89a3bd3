//! Names: cluster, node, namespace/service and port names, trust domains, service names.
//!
//! Pure validation of text into newtypes; no I/O, no state.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::shorten;

const LABEL_RULE: &str =
    "use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'";
const HOST_LABEL_RULE: &str =
    "use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit and \
     not ending with '-'";
const PORT_NAME_RULE: &str =
    "use 1 to 15 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'";
const TRUST_DOMAIN_RULE: &str =
    "use 1 to 255 characters of a-z, 0-9, '.', '-' and '_', with no empty part between dots";

/// A name (cluster, node, trust domain, namespace, service or port name) that broke its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    /// The name was empty.
    #[error("{kind} must not be empty; {rule}")]
    Empty {
        /// What kind of name it was, e.g. `cluster id`.
        kind: &'static str,
        /// The rule the name must follow.
        rule: &'static str,
    },
    /// The name was longer than allowed.
    #[error("{kind} {value:?} is {len} characters long, more than {max}; {rule}")]
    TooLong {
        /// What kind of name it was.
        kind: &'static str,
        /// The (shortened) offending input.
        value: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
        /// The rule the name must follow.
        rule: &'static str,
    },
    /// The name contained a character outside the allowed set.
    #[error("{kind} {value:?} contains {ch:?}; {rule}")]
    BadChar {
        /// What kind of name it was.
        kind: &'static str,
        /// The (shortened) offending input.
        value: String,
        /// The first offending character.
        ch: char,
        /// The rule the name must follow.
        rule: &'static str,
    },
    /// A DNS-label style name did not start with an allowed character.
    #[error("{kind} {value:?} must start with {expected}; {rule}")]
    BadStart {
        /// What kind of name it was.
        kind: &'static str,
        /// The (shortened) offending input.
        value: String,
        /// What the first character must be, e.g. `a lowercase letter`.
        expected: &'static str,
        /// The rule the name must follow.
        rule: &'static str,
    },
    /// A DNS-label style name ended with `-`.
    #[error("{kind} {value:?} must not end with '-'; {rule}")]
    TrailingHyphen {
        /// What kind of name it was.
        kind: &'static str,
        /// The (shortened) offending input.
        value: String,
        /// The rule the name must follow.
        rule: &'static str,
    },
    /// A dotted name had a leading, trailing or doubled dot.
    #[error("{kind} {value:?} has an empty part (leading, trailing or doubled '.'); {rule}")]
    EmptyLabel {
        /// What kind of name it was.
        kind: &'static str,
        /// The (shortened) offending input.
        value: String,
        /// The rule the name must follow.
        rule: &'static str,
    },
    /// A service name was not `<name>.<namespace>`.
    #[error(
        "service name {value:?} must be written <name>.<namespace> with exactly one '.', \
         for example web.shop"
    )]
    ServiceNameShape {
        /// The (shortened) offending input.
        value: String,
    },
}

/// Which characters a DNS-label style name may start with.
#[derive(Clone, Copy)]
enum Start {
    /// RFC 1035 style (cluster, node and port names): a lowercase letter.
    Letter,
    /// RFC 1123 style (namespaces, service names, endpoint hostnames such as `10-0-0-5`):
    /// a lowercase letter or a digit.
    LetterOrDigit,
}

fn check_label(
    kind: &'static str,
    s: &str,
    max: usize,
    rule: &'static str,
    start: Start,
) -> Result<(), InvalidName> {
    if s.is_empty() {
        return Err(InvalidName::Empty { kind, rule });
    }
    if s.len() > max {
        return Err(InvalidName::TooLong {
            kind,
            value: shorten(s),
            len: s.len(),
            max,
            rule,
        });
    }
    if let Some(ch) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(InvalidName::BadChar {
            kind,
            value: shorten(s),
            ch,
            rule,
        });
    }
    let first = s.as_bytes()[0];
    let (ok, expected) = match start {
        Start::Letter => (first.is_ascii_lowercase(), "a lowercase letter"),
        Start::LetterOrDigit => (
            first.is_ascii_lowercase() || first.is_ascii_digit(),
            "a lowercase letter or digit",
        ),
    };
    if !ok {
        return Err(InvalidName::BadStart {
            kind,
            value: shorten(s),
            expected,
            rule,
        });
    }
    if s.ends_with('-') {
        return Err(InvalidName::TrailingHyphen {
            kind,
            value: shorten(s),
            rule,
        });
    }
    Ok(())
}

fn check_trust_domain(s: &str) -> Result<(), InvalidName> {
    const KIND: &str = "trust domain";
    let rule = TRUST_DOMAIN_RULE;
    if s.is_empty() {
        return Err(InvalidName::Empty { kind: KIND, rule });
    }
    if s.len() > 255 {
        return Err(InvalidName::TooLong {
            kind: KIND,
            value: shorten(s),
            len: s.len(),
            max: 255,
            rule,
        });
    }
    if let Some(ch) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        return Err(InvalidName::BadChar {
            kind: KIND,
            value: shorten(s),
            ch,
            rule,
        });
    }
    if s.split('.').any(str::is_empty) {
        return Err(InvalidName::EmptyLabel {
            kind: KIND,
            value: shorten(s),
            rule,
        });
    }
    Ok(())
}

/// Implements the string conversions shared by every string newtype.
macro_rules! string_newtype_impls {
    ($name:ident) => {
        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $name {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, InvalidName> {
                Self::new(s)
            }
        }
        impl TryFrom<String> for $name {
            type Error = InvalidName;
            fn try_from(s: String) -> Result<Self, InvalidName> {
                Self::new(s)
            }
        }
        impl TryFrom<&str> for $name {
            type Error = InvalidName;
            fn try_from(s: &str) -> Result<Self, InvalidName> {
                Self::new(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0.to_string()
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

/// Declares a DNS-label newtype.
macro_rules! label_newtype {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $max:expr, $rule:expr, $start:expr) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        // Shared text: names are cloned into every plan, hop and metric key per call, and a
        // clone is a reference count, not an allocation.
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, InvalidName> {
                let s = s.into();
                check_label($kind, &s, $max, $rule, $start)?;
                Ok(Self(s.into()))
            }
        }
        string_newtype_impls!($name);
    };
}

label_newtype!(
    /// A cluster's name: a DNS label (1..=63 of `[a-z0-9-]`, starts with a letter, no trailing `-`).
    ClusterId,
    "cluster id",
    63,
    LABEL_RULE,
    Start::Letter
);
label_newtype!(
    /// A node's name within a cluster: same rules as [`ClusterId`].
    NodeName,
    "node name",
    63,
    LABEL_RULE,
    Start::Letter
);
label_newtype!(
    /// A namespace, service name or endpoint hostname: an RFC 1123 DNS label (1..=63 of
    /// `[a-z0-9-]`, starts with a letter or digit, no trailing `-`), so the Kubernetes-style
    /// default hostname of an endpoint (`10-0-0-5`) is one.
    Label,
    "name",
    63,
    HOST_LABEL_RULE,
    Start::LetterOrDigit
);
label_newtype!(
    /// A port name: a DNS label of at most 15 characters (the Kubernetes port-name rule).
    PortName,
    "port name",
    15,
    PORT_NAME_RULE,
    Start::Letter
);

/// A SPIFFE trust domain: 1..=255 chars of `[a-z0-9.-_]`, no empty dot-separated part.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Validates `s` and wraps it.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidName> {
        let s = s.into();
        check_trust_domain(&s)?;
        Ok(Self(s))
    }
}
string_newtype_impls!(TrustDomain);

/// A service's identity across the mesh: `<name>.<namespace>`, e.g. `web.shop`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName {
    name: Label,
    namespace: Label,
}

impl ServiceName {
    /// Builds a service name from its validated parts.
    pub fn new(name: Label, namespace: Label) -> Self {
        Self { name, namespace }
    }

    /// The service's own name (`web` in `web.shop`).
    pub fn name(&self) -> &Label {
        &self.name
    }

    /// The service's namespace (`shop` in `web.shop`).
    pub fn namespace(&self) -> &Label {
        &self.namespace
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

impl FromStr for ServiceName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, InvalidName> {
        let shape = || InvalidName::ServiceNameShape { value: shorten(s) };
        let (name, namespace) = s.split_once('.').ok_or_else(shape)?;
        if namespace.contains('.') {
            return Err(shape());
        }
        // The same rule as [`Label`], so every `ServiceName::new(label, label)` prints a name
        // that parses back.
        check_label(
            "service name",
            name,
            63,
            HOST_LABEL_RULE,
            Start::LetterOrDigit,
        )?;
        check_label(
            "namespace",
            namespace,
            63,
            HOST_LABEL_RULE,
            Start::LetterOrDigit,
        )?;
        Ok(Self {
            name: Label(name.into()),
            namespace: Label(namespace.into()),
        })
    }
}

impl TryFrom<String> for ServiceName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, InvalidName> {
        s.parse()
    }
}

impl From<ServiceName> for String {
    fn from(v: ServiceName) -> String {
        v.to_string()
    }
}
