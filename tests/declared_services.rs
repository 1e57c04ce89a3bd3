//! Config file or CLI, never both: a service the config file declares is managed by the
//! file (runtime changes are refused, naming the file), one added with the CLI survives
//! restarts, and a declaration removed from the file is removed at the next start.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_services_belong_to_the_file_and_cli_services_to_the_cli() {
    let mesh = Mesh::new("example.org");
    let def = mesh.cluster("east", "127.99.0.0/16");
    def.append_config(
        "\n[[service]]\nname = \"api.shop\"\nports = [\"http=8080/http\"]\nendpoints = [\"127.0.0.1:9\"]\nexport = true\n",
    );
    let mut cluster = def.up().await;
    let config = def.config.to_str().unwrap().to_owned();
    for args in [
        vec!["unexport", "api.shop"],
        vec!["export", "api.shop"],
        vec!["service", "remove", "api.shop"],
        vec!["service", "add", "api.shop", "--port", "http=80/http"],
    ] {
        let out = def.cli(&args);
        assert!(!out.status.success(), "{args:?} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("api.shop is declared in") && err.contains(&config),
            "{args:?}: {err}"
        );
    }
    let declared = def.service("api.shop").unwrap();
    assert_eq!(declared["exported"], true);
    assert_eq!(declared["ports"], serde_json::json!(["http=8080/http"]));

    // A CLI service, replaced once (the CLI says what changed), survives a restart.
    def.cli_ok(&[
        "service",
        "add",
        "cli.shop",
        "--port",
        "http=80/http",
        "--export",
    ]);
    let out = def.cli(&["service", "add", "cli.shop", "--port", "http=81/http"]);
    assert!(out.status.success());
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("replaced cli.shop: ports http=80/http -> http=81/http")
            && note.contains("no longer exported"),
        "{note}"
    );
    cluster.kill();

    // The declaration leaves the file: gone after the restart; the CLI service stays.
    let text = std::fs::read_to_string(&def.config).unwrap();
    let cut = text.find("\n[[service]]").unwrap();
    std::fs::write(&def.config, &text[..cut]).unwrap();
    let _cluster = def.up().await;
    assert!(def.service("api.shop").is_none());
    let cli = def.service("cli.shop").unwrap();
    assert_eq!(cli["ports"], serde_json::json!(["http=81/http"]));
    assert_eq!(cli["exported"], false);
}
