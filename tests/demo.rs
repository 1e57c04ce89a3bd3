//! The README's first command: `ferry demo` must make a real cross-cluster call and exit 0.

use std::process::Command;

#[test]
fn demo_crosses_clusters_and_exits_zero() {
    // Something already holds the example clusters' first VIP on the demo's port, as a
    // cluster started from deploy/ would: the demo picks another range.
    let _running = std::net::TcpListener::bind("127.10.0.1:8080");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("answer: hello from west"), "{stdout}");
    // The name resolved through east's mesh DNS, and the dig line a user can run is printed
    // on a line of its own.
    assert!(
        stdout.lines().any(|l| l.starts_with("dig @127.0.0.1 -p ")
            && l.ends_with(" web.shop.svc.clusterset.local")),
        "{stdout}"
    );
    let vip = stdout
        .split("web.shop.svc.clusterset.local -> ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no resolved VIP in {stdout}"));
    let vip: std::net::Ipv4Addr = vip.parse().unwrap();
    assert!(
        vip.is_loopback() && vip.octets()[1] >= 130,
        "{vip}: a free range"
    );
    assert!(stdout.contains("OK: the call crossed clusters"), "{stdout}");
}
