//! The README's "Using it" block, run as written: each line through bash in a copy of the
//! repository's `deploy/` directory, with `ferry` on the PATH. Only the fixed ports and VIP
//! ranges are substituted (so the test runs beside a real cluster), and `<vip>` is the
//! address the block's `dig` line printed. A line ending in `&` keeps running in the
//! background; lines whose answer arrives asynchronously (`services`, `dig`, `curl`) are
//! retried until they show it.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::FERRY;
use ferry::testkit::free_port;

/// The first ```sh block after the "## Using it" heading.
fn using_it_block(readme: &str) -> Vec<String> {
    let section = readme
        .split("## Using it")
        .nth(1)
        .expect("the README has a \"## Using it\" section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the section has a ```sh block");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

struct Background(Vec<Child>);

impl Drop for Background {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn bash(dir: &Path, path_env: &str, line: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(line)
        .current_dir(dir)
        .env("PATH", path_env)
        .stdin(Stdio::null());
    cmd
}

/// Whether a line's output shows what the README promises next to it.
fn shows_result(line: &str, stdout: &str) -> bool {
    if line.contains(" services") {
        stdout.contains("cart.shop") && stdout.contains("west(1)")
    } else if line.starts_with("dig ") {
        stdout.trim().parse::<std::net::IpAddr>().is_ok()
    } else if line.starts_with("curl ") && line.contains("/metrics") {
        stdout.contains("ferry_requests_total")
    } else if line.starts_with("curl ") {
        stdout.contains("hello from west")
    } else {
        true
    }
}

#[test]
fn the_using_it_block_works_as_written() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let lines = using_it_block(&readme);
    assert!(lines.len() >= 10, "{lines:?}");

    let dir = tempfile::Builder::new()
        .prefix("ferry-readme-")
        .tempdir()
        .unwrap();
    // Every fixed port, wherever the block or the configs write it (`:4433`, `-p 5353`).
    let mut subst: Vec<(String, String)> = Vec::new();
    for port in ["4433", "4434", "5353", "5354", "9000", "9100", "9200"] {
        let new = free_port();
        subst.push((format!(":{port}"), format!(":{new}")));
        subst.push((format!("-p {port}"), format!("-p {new}")));
    }
    subst.push(("127.10.".into(), "127.110.".into()));
    subst.push(("127.20.".into(), "127.120.".into()));
    let apply = |s: &str| {
        subst
            .iter()
            .fold(s.to_owned(), |acc, (from, to)| acc.replace(from, to))
    };
    std::fs::create_dir(dir.path().join("deploy")).unwrap();
    for f in ["east.toml", "west.toml"] {
        let text = std::fs::read_to_string(repo.join("deploy").join(f)).unwrap();
        std::fs::write(dir.path().join("deploy").join(f), apply(&text)).unwrap();
    }
    let bin_dir = Path::new(FERRY).parent().unwrap();
    let path_env = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut background = Background(Vec::new());
    let mut vip = None::<String>;
    for line in &lines {
        let mut line = apply(line);
        if let Some(v) = &vip {
            line = line.replace("<vip>", v);
        }
        assert!(!line.contains('<'), "unfilled placeholder in {line:?}");
        if let Some(cmd) = line.split('#').next().unwrap().trim().strip_suffix('&') {
            let log =
                std::fs::File::create(dir.path().join(format!("bg{}.log", background.0.len())))
                    .unwrap();
            let child = bash(dir.path(), &path_env, &format!("exec {cmd}"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            background.0.push(child);
            if cmd.contains("ferry up") {
                // The next lines talk to this cluster: wait for its admin socket.
                let cfg = cmd.split_whitespace().last().unwrap();
                let name = Path::new(cfg).file_stem().unwrap().to_str().unwrap();
                let socket = dir
                    .path()
                    .join("deploy")
                    .join(format!("{name}-data"))
                    .join("control.sock");
                let deadline = Instant::now() + Duration::from_secs(30);
                while !socket.exists() {
                    assert!(
                        Instant::now() < deadline,
                        "{cmd}: no socket at {}",
                        socket.display()
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let stdout = loop {
            let out = bash(dir.path(), &path_env, &line).output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && shows_result(&line, &stdout) {
                break stdout;
            }
            assert!(
                Instant::now() < deadline,
                "README line failed: {line}\nexit: {}\nstdout: {stdout}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        if line.starts_with("dig ") {
            vip = Some(stdout.trim().to_owned());
        }
    }
    assert!(vip.is_some(), "the block resolves a name and calls it");
}
