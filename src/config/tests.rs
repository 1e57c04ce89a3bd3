use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
cluster = "east"
[trust]
dir = "ca"
"#;

#[test]
fn minimal_config_gets_defaults() {
    let cfg = Config::parse(MINIMAL, Path::new("/etc/ferry")).unwrap();
    assert_eq!(cfg.cluster.as_str(), "east");
    assert_eq!(cfg.trust_dir, Path::new("/etc/ferry/ca"));
    assert_eq!(cfg.socket, Path::new("/etc/ferry/data/control.sock"));
    assert_eq!(cfg.vip_range.to_string(), "127.10.0.0/16");
    assert_eq!(cfg.cert_ttl, Duration::from_secs(24 * 3600));
    assert_eq!(cfg.dns.zone, "clusterset.local");
}

#[test]
fn services_are_parsed() {
    let text = format!(
        "{MINIMAL}\n[[service]]\nname = \"web.shop\"\nports = [\"http=8080/http\"]\nendpoints = [\"127.0.0.1:9000\"]\nexport = true\n"
    );
    let cfg = Config::parse(&text, Path::new(".")).unwrap();
    assert_eq!(cfg.services.len(), 1);
    assert!(cfg.services[0].export);
    assert_eq!(cfg.services[0].spec.name.to_string(), "web.shop");
}

#[test]
fn errors_name_the_key() {
    let cases: &[(&str, &str)] = &[
        ("cluster = \"East!\"\n[trust]\ndir = \"ca\"", "`cluster`"),
        ("cluster = \"east\"\n[trust]\ndir = \"ca\"\ncert_ttl = \"soon\"", "`trust.cert_ttl`"),
        ("cluster = \"east\"\n[trust]\ndir = \"ca\"\n[control]\nvip_range = \"10.0.0.1/16\"", "`control.vip_range`"),
        ("cluster = \"east\"\n[trust]\ndir = \"ca\"\n[gateway]\nlisten = \"nowhere\"", "`gateway.listen`"),
        ("cluster = \"east\"\n[trust]\ndir = \"ca\"\n[node]\nmax_in_flight_per_endpoint = 0", "`node.max_in_flight_per_endpoint`"),
        ("cluster = \"east\"\n[trust]\ndir = \"ca\"\n[gateway]\nadvertise = \"0.0.0.0:0\"", "`gateway.advertise`"),
        (
            "cluster = \"east\"\n[trust]\ndir = \"ca\"\n[[service]]\nname = \"web\"\nports = [\"http=80/http\"]",
            "`service[0].name`",
        ),
        (
            "cluster = \"east\"\n[trust]\ndir = \"ca\"\n[[service]]\nname = \"web.shop\"\nports = [\"http=0/http\"]",
            "`service[0].ports`",
        ),
    ];
    for (text, key) in cases {
        let err = Config::parse(text, Path::new(".")).unwrap_err().to_string();
        assert!(err.contains(key), "{text:?}: {err}");
    }
}

#[test]
fn unknown_keys_are_refused() {
    let err = Config::parse(
        "cluster = \"east\"\nclustr = 1\n[trust]\ndir = \"ca\"",
        Path::new("."),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("clustr"), "{err}");
}

#[test]
fn vip_range_arithmetic() {
    let r: VipRange = "127.10.0.0/16".parse().unwrap();
    assert_eq!(r.size(), 65534);
    assert_eq!(r.nth(0).unwrap().to_string(), "127.10.0.1");
    assert!(r.contains("127.10.255.254".parse().unwrap()));
    assert!(!r.contains("127.11.0.1".parse().unwrap()));
    assert!(r.nth(65534).is_none());
}

#[test]
fn deploy_examples_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "expected example configs in deploy/");
}

#[test]
fn headless_services_and_named_endpoints() {
    let service = |body: &str| {
        format!("{MINIMAL}\n[[service]]\nname = \"kafka.data\"\nports = [\"broker=9092\"]\n{body}")
    };
    let cfg = Config::parse(
        &service("endpoints = [\"kafka-0=127.0.0.1:9100\", \"127.0.0.2\"]\nheadless = true\n"),
        Path::new("."),
    )
    .unwrap();
    let spec = &cfg.services[0].spec;
    assert!(spec.headless);
    let hosts: Vec<String> = spec
        .endpoints
        .iter()
        .map(|e| e.hostname_or_default().to_string())
        .collect();
    assert_eq!(hosts, ["kafka-0", "127-0-0-2"]);

    let plain = Config::parse(&service("endpoints = [\"127.0.0.1\"]\n"), Path::new(".")).unwrap();
    assert!(
        !plain.services[0].spec.headless,
        "headless defaults to false"
    );

    let dup = service("endpoints = [\"k=127.0.0.1\", \"k=127.0.0.2\"]\nheadless = true\n");
    let err = Config::parse(&dup, Path::new(".")).unwrap_err().to_string();
    assert!(
        err.contains("`service[0]`") && err.contains("two endpoints named k"),
        "{err}"
    );

    let bad = service("endpoints = [\"Kafka=127.0.0.1\"]\n");
    let err = Config::parse(&bad, Path::new(".")).unwrap_err().to_string();
    assert!(
        err.contains("`service[0].endpoints`") && err.contains("hostname"),
        "{err}"
    );
}

#[test]
fn dns_section_defaults_and_errors() {
    let base = "cluster = \"east\"\n[trust]\ndir = \"ca\"\n";
    let cfg = Config::parse(base, std::path::Path::new("/tmp")).unwrap();
    assert_eq!(cfg.dns.ttl, std::time::Duration::from_secs(5));
    assert_eq!(cfg.dns.rate_limit, 2000);
    assert!(!cfg.dns.forward_from.is_empty());
    let with = |dns: &str| {
        Config::parse(
            &format!("{base}[dns]\n{dns}\n"),
            std::path::Path::new("/tmp"),
        )
    };
    let cfg =
        with("upstreams = [\"192.0.2.53\", \"192.0.2.54:5300\"]\nttl = \"30s\"\nrate_limit = 0")
            .unwrap();
    assert_eq!(
        cfg.dns.upstreams,
        vec![
            "192.0.2.53:53".parse().unwrap(),
            "192.0.2.54:5300".parse().unwrap()
        ]
    );
    assert_eq!(cfg.dns_settings().zone.ttl, 30);
    assert_eq!(
        cfg.dns_settings().zone.negative_ttl,
        5,
        "negative answers stay at 5 s at most"
    );
    for (bad, hint) in [
        ("zone = \"a..b\"", "dns.zone"),
        ("ttl = \"0s\"", "whole seconds"),
        ("ttl = \"soon\"", "whole seconds"),
        ("forward_from = [\"10.0.0.0/33\"]", "CIDR"),
        ("upstreams = [\"resolver\"]", "ip:port"),
        (
            "listen = \"127.0.0.1:5353\"\nupstreams = [\"127.0.0.1:5353\"]",
            "loop",
        ),
        ("bogus = 1", "bogus"),
    ] {
        let err = with(bad).unwrap_err().to_string();
        assert!(err.contains(hint), "{bad}: {err}");
    }
}

#[test]
fn policies_are_parsed_in_the_shape_of_the_cli_flags() {
    let text = format!(
        r#"{MINIMAL}
[[policy]]
service = "web.shop"
weights = {{ east = 90, west = 10 }}
timeout = "2s"
retries = 2
retry_on = ["5xx", "reset"]
routes = ["X-Canary=1 -> west"]

[[policy]]
service = "db.shop"
local_only = true
"#
    );
    let cfg = Config::parse(&text, Path::new(".")).unwrap();
    let [db, web] = &cfg.policies[..] else {
        panic!("{:?}", cfg.policies)
    };
    assert_eq!(db.service.to_string(), "db.shop");
    assert_eq!(db.split, ferry_federation::Split::LocalOnly);
    assert_eq!(db.retries, 0);
    assert_eq!(web.split.to_string(), "weights=east=90,west=10");
    assert_eq!(web.timeout, Some(Duration::from_secs(2)));
    assert_eq!(web.retries, 2);
    assert_eq!(web.retry_on.len(), 2);
    assert_eq!(web.routes[0].to_string(), "x-canary=1 -> west");
}

#[test]
fn policy_errors_name_the_key_and_the_fix() {
    let p = |body: &str| format!("{MINIMAL}\n[[policy]]\nservice = \"web.shop\"\n{body}\n");
    let cases: Vec<(String, &str)> = vec![
        (
            p("local_only = true\npinned = \"west\""),
            "at most one of local_only, pinned and weights",
        ),
        (
            p("weights = { east = 0 }"),
            "give at least one cluster a weight above 0",
        ),
        (p("weights = { East = 1 }"), "`policy[0].weights`"),
        (p("pinned = \"we st\""), "`policy[0].pinned`"),
        (p("retries = 9"), "more than 5"),
        (p("timeout = \"0s\""), "above 0"),
        (p("timeout = \"soon\""), "`policy[0].timeout`"),
        (p("retry_on = [\"4xx\"]"), "`policy[0].retry_on`"),
        (p("routes = [\"x-canary -> west\"]"), "`policy[0].routes`"),
        (p("split = \"failover\""), "unknown field"),
        (
            format!("{}[[policy]]\nservice = \"web.shop\"\n", p("")),
            "two [[policy]] tables",
        ),
        (
            format!("{MINIMAL}\n[[policy]]\nservice = \"web\"\n"),
            "`policy[0].service`",
        ),
    ];
    for (text, want) in cases {
        let err = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{text:?}: {err}");
    }
}
