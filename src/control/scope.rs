//! Who may call what on the control plane: three Unix sockets, three scopes.
//!
//! - the **admin** socket (`control.socket`): everything; the CLI's verbs live only here;
//! - the **role** socket (`<socket>` with `.roles.sock`): what the cluster's own gateways and
//!   node proxies need (certificates, gateway registration, import reports, token
//!   redemption, the snapshot stream);
//! - the **watch** socket (`.watch.sock`): the snapshot stream only (`ferry dns`).
//!
//! All three are created owner-only (the process umask is 077 before they are bound), and
//! every call also checks the caller's Unix credentials (`SO_PEERCRED`): only this process's
//! user (or root) is served. This module decides; the API handlers ask it first.

use std::fmt;
use std::path::{Path, PathBuf};

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

/// What a socket serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Role,
    Watch,
}

/// Which kind of call an RPC is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// A CLI verb: changes or reads the cluster's configuration.
    Admin,
    /// A call only the cluster's own roles make.
    Role,
    /// Following the snapshot stream.
    Watch,
}

impl Scope {
    /// Whether this socket serves calls of `kind`.
    pub fn allows(self, kind: CallKind) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Role => kind != CallKind::Admin,
            Scope::Watch => kind == CallKind::Watch,
        }
    }

    /// The socket path of this scope, next to the admin socket `admin`.
    pub fn path(self, admin: &Path) -> PathBuf {
        match self {
            Scope::Admin => admin.to_owned(),
            Scope::Role => admin.with_extension("roles.sock"),
            Scope::Watch => admin.with_extension("watch.sock"),
        }
    }

    fn serves(self) -> &'static str {
        match self {
            Scope::Admin => "every call",
            Scope::Role => "the calls of the cluster's gateways and node proxies",
            Scope::Watch => "the snapshot stream only",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Admin => "admin",
            Scope::Role => "role",
            Scope::Watch => "watch",
        })
    }
}

/// Refuses `request` unless this socket serves `call` (of `kind`) and the caller runs as
/// this process's user or root.
pub fn check<T>(
    scope: Scope,
    admin_socket: &Path,
    call: &str,
    kind: CallKind,
    request: &Request<T>,
) -> Result<(), Status> {
    if !scope.allows(kind) {
        return Err(Status::permission_denied(format!(
            "{call} is not served on the {scope} socket ({}); the CLI's verbs are served on the admin socket {}",
            scope.serves(),
            admin_socket.display()
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    let caller = request
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .map(|cred| cred.uid());
    match caller {
        Some(uid) if uid == me || uid == 0 => Ok(()),
        Some(uid) => Err(Status::permission_denied(format!(
            "the control plane runs as uid {me} and serves only that user and root; the caller is uid {uid}"
        ))),
        // In-process calls (tests) carry no connection info.
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_serve_what_they_should() {
        use CallKind::*;
        let table = [
            (Scope::Admin, [true, true, true]),
            (Scope::Role, [false, true, true]),
            (Scope::Watch, [false, false, true]),
        ];
        for (scope, want) in table {
            let got = [Admin, Role, Watch].map(|k| scope.allows(k));
            assert_eq!(got, want, "{scope}");
        }
        let admin = Path::new("/run/ferry/east.sock");
        assert_eq!(
            Scope::Role.path(admin),
            Path::new("/run/ferry/east.roles.sock")
        );
        assert_eq!(
            Scope::Watch.path(admin),
            Path::new("/run/ferry/east.watch.sock")
        );
        let err = check(Scope::Watch, admin, "AddService", Admin, &Request::new(())).unwrap_err();
        assert!(err
            .message()
            .contains("AddService is not served on the watch socket"));
        assert!(err.message().contains("/run/ferry/east.sock"));
    }
}
