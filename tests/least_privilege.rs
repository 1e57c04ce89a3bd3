//! Least privilege on the host: the control plane's three sockets serve three scopes, files
//! and sockets are owner-only from creation, clients refuse another user's socket, and link
//! tokens need not appear on a command line.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_serve_their_scope_and_everything_is_owner_only() {
    let mesh = Mesh::new("example.org");
    let def = mesh.cluster("east", "127.95.0.0/16");
    let _east = def.up().await;
    let admin = def.socket.clone();
    let roles = admin.with_extension("roles.sock");
    let watch = admin.with_extension("watch.sock");

    // An admin verb on the watch or role socket is refused, saying where it is served.
    for sock in [&watch, &roles] {
        let out = std::process::Command::new(FERRY)
            .arg("--control")
            .arg(sock)
            .args(["service", "add", "a.x", "--port", "tcp=1"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("AddService is not served on the")
                && err.contains(admin.to_str().unwrap()),
            "{err}"
        );
    }
    assert!(def.service("a.x").is_none(), "nothing was added");
    // A role call on the watch socket is refused too.
    let mut c = ferry::client::connect(&watch).await.unwrap();
    let err = c
        .issue_certificate(ferry::pb::IssueRequest {
            role: "gateway".into(),
            node: String::new(),
            csr_pem: ferry_gateway::pki::new_leaf_request().unwrap().csr_pem,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

    // Sockets, the data directory and the store are owner-only.
    for sock in [&admin, &roles, &watch] {
        assert_eq!(mode(sock) & 0o077, 0, "{} is owner-only", sock.display());
    }
    let data = def.data_dir();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("control.redb")), 0o600);
    for f in ["gateway.addr", "dns.addr"] {
        assert_eq!(mode(&data.join(f)) & 0o077, 0, "{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_owned_by_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&fake).unwrap();
    nix::unistd::chown(&fake, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    assert_eq!(std::fs::metadata(&fake).unwrap().uid(), 65534);
    let out = std::process::Command::new(FERRY)
        .arg("--control")
        .arg(&fake)
        .arg("services")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is owned by uid 65534, not by you"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_come_from_a_file_or_stdin_and_the_command_line_warns() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.96.0.0/16");
    let west_def = mesh.cluster("west", "127.97.0.0/16");
    let north_def = mesh.cluster("north", "127.98.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let _north = north_def.up().await;

    // A file (0600, as a careful operator writes it).
    let token = east_def.token_for("west", &[]);
    let file = mesh.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    west_def.cli_ok(&["link", "join", "--token-file", file.to_str().unwrap()]);
    assert_eq!(west_def.links().len(), 1);

    // On the command line: works, with a warning.
    let token = east_def.token_for("north", &[]);
    let out = north_def.cli(&["link", "join", &token]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("visible to other local users"), "{err}");

    // Nothing on standard input: a clear error.
    let out = west_def.cli_with_input(&["link", "join"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token on standard input"));
}
