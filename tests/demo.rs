//! The README's first command: `ferry demo` must make a real cross-cluster call and exit 0.

use std::process::Command;

#[test]
fn demo_crosses_clusters_and_exits_zero() {
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
    assert!(stdout.contains("OK: the call crossed clusters"), "{stdout}");
}
