use super::*;
use std::net::IpAddr;

#[test]
fn dns_label_names() {
    let long63 = format!("a{}", "b".repeat(62));
    let long64 = format!("a{}", "b".repeat(63));
    let cases: &[(&str, bool)] = &[
        ("east", true),
        ("e", true),
        ("us-east-1", true),
        ("a1", true),
        (&long63, true),
        ("", false),
        (&long64, false),
        ("East", false),
        ("-east", false),
        ("east-", false),
        ("ea_st", false),
        ("ea.st", false),
        ("ea st", false),
        ("é", false),
    ];
    for (input, ok) in cases {
        assert_eq!(ClusterId::new(*input).is_ok(), *ok, "ClusterId {input:?}");
        assert_eq!(NodeName::new(*input).is_ok(), *ok, "NodeName {input:?}");
        assert_eq!(Label::new(*input).is_ok(), *ok, "Label {input:?}");
    }
    // Cluster and node names start with a letter; a Label (RFC 1123) may start with a digit,
    // so an endpoint's default hostname `10-0-0-5` is one.
    for digit_first in ["1east", "10-0-0-5", "0--1"] {
        assert!(ClusterId::new(digit_first).is_err(), "{digit_first}");
        assert!(NodeName::new(digit_first).is_err(), "{digit_first}");
        assert!(Label::new(digit_first).is_ok(), "{digit_first}");
    }
    let e = Label::new("-x").unwrap_err();
    assert!(e.to_string().contains("a lowercase letter or digit"), "{e}");
    let e = ClusterId::new("1x").unwrap_err();
    assert!(
        e.to_string().contains("start with a lowercase letter;"),
        "{e}"
    );
}

#[test]
fn name_errors_say_what_and_how() {
    let e = ClusterId::new("East").unwrap_err();
    assert!(matches!(e, InvalidName::BadChar { ch: 'E', .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("cluster id \"East\""), "{msg}");
    assert!(msg.contains("a-z"), "{msg}");
    assert!(matches!(ClusterId::new(""), Err(InvalidName::Empty { .. })));
    assert!(matches!(
        ClusterId::new("1a"),
        Err(InvalidName::BadStart { .. })
    ));
    assert!(matches!(
        ClusterId::new("a-"),
        Err(InvalidName::TrailingHyphen { .. })
    ));
    let e = ClusterId::new("a".repeat(10_000)).unwrap_err();
    assert!(matches!(
        e,
        InvalidName::TooLong {
            len: 10_000,
            max: 63,
            ..
        }
    ));
    assert!(
        e.to_string().len() < 400,
        "long input is shortened in the message"
    );
}

#[test]
fn port_names() {
    let cases: &[(&str, bool)] = &[
        ("http", true),
        ("grpc-web", true),
        ("abcdefghijklmno", true),
        ("abcdefghijklmnop", false),
        ("", false),
        ("Http", false),
        ("8080", false),
        ("http-", false),
    ];
    for (input, ok) in cases {
        assert_eq!(PortName::new(*input).is_ok(), *ok, "{input:?}");
    }
}

#[test]
fn trust_domains() {
    let cases: &[(&str, bool)] = &[
        ("mesh.local", true),
        ("example.org", true),
        ("a_b-c.d0", true),
        ("ferry", true),
        ("", false),
        (".mesh", false),
        ("mesh.", false),
        ("a..b", false),
        ("Mesh.local", false),
        ("mesh:443", false),
        ("me sh", false),
        ("mesh%2f", false),
    ];
    for (input, ok) in cases {
        assert_eq!(TrustDomain::new(*input).is_ok(), *ok, "{input:?}");
    }
    assert!(TrustDomain::new("a".repeat(255)).is_ok());
    assert!(matches!(
        TrustDomain::new("a".repeat(256)),
        Err(InvalidName::TooLong { max: 255, .. })
    ));
}

#[test]
fn service_names() {
    let ok: ServiceName = "web.shop".parse().unwrap();
    assert_eq!(ok.name().as_str(), "web");
    assert_eq!(ok.namespace().as_str(), "shop");
    assert_eq!(ok.to_string(), "web.shop");
    assert_eq!(
        ServiceName::new(Label::new("web").unwrap(), Label::new("shop").unwrap()),
        ok
    );
    let cases: &[(&str, bool)] = &[
        ("a.b", true),
        ("web-1.shop-2", true),
        ("web.2024-team", true),
        ("web", false),
        ("web.", false),
        (".shop", false),
        ("web.shop.svc", false),
        ("Web.shop", false),
        ("web.Shop", false),
        ("web..shop", false),
        ("", false),
    ];
    for (input, good) in cases {
        assert_eq!(input.parse::<ServiceName>().is_ok(), *good, "{input:?}");
    }
    let e = "web".parse::<ServiceName>().unwrap_err();
    assert!(e.to_string().contains("<name>.<namespace>"), "{e}");
    let e = "web.Shop".parse::<ServiceName>().unwrap_err();
    assert!(e.to_string().contains("namespace"), "{e}");
}

#[test]
fn newtypes_serde_as_strings() {
    let c: ClusterId = serde_json::from_str("\"east\"").unwrap();
    assert_eq!(serde_json::to_string(&c).unwrap(), "\"east\"");
    assert!(serde_json::from_str::<ClusterId>("\"East\"").is_err());
    let s: ServiceName = serde_json::from_str("\"web.shop\"").unwrap();
    assert_eq!(serde_json::to_string(&s).unwrap(), "\"web.shop\"");
    assert!(serde_json::from_str::<ServiceName>("\"web\"").is_err());
    let td: TrustDomain = serde_json::from_str("\"mesh.local\"").unwrap();
    assert_eq!(td.as_str(), "mesh.local");
    assert!(serde_json::from_str::<PortName>("\"a-very-long-port-name\"").is_err());
    assert_eq!(String::from(c.clone()), "east");
    assert_eq!(ClusterId::try_from("east".to_string()).unwrap(), c);
}

#[test]
fn protocols() {
    for (s, p) in [
        ("tcp", Protocol::Tcp),
        ("http", Protocol::Http),
        ("grpc", Protocol::Grpc),
        ("udp", Protocol::Udp),
    ] {
        assert_eq!(s.parse::<Protocol>().unwrap(), p);
        assert_eq!(p.to_string(), s);
        assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{s}\""));
    }
    for bad in ["TCP", "", "sctp", "http2"] {
        assert!(matches!(
            bad.parse::<Protocol>(),
            Err(InvalidPort::Protocol { .. })
        ));
    }
}

#[test]
fn service_ports() {
    let p = |name: &str, port, target, protocol| ServicePort {
        name: PortName::new(name).unwrap(),
        port,
        target_port: target,
        protocol,
    };
    let ok = [
        (
            "http=8080/http",
            p("http", 8080, 8080, Protocol::Http),
            "http=8080/http",
        ),
        (
            "http=80:8080/http",
            p("http", 80, 8080, Protocol::Http),
            "http=80:8080/http",
        ),
        ("db=5432", p("db", 5432, 5432, Protocol::Tcp), "db=5432/tcp"),
        ("dns=53/udp", p("dns", 53, 53, Protocol::Udp), "dns=53/udp"),
        (
            "api=443:8443/grpc",
            p("api", 443, 8443, Protocol::Grpc),
            "api=443:8443/grpc",
        ),
        (
            "x=65535:1",
            p("x", 65535, 1, Protocol::Tcp),
            "x=65535:1/tcp",
        ),
        (
            "same=80:80",
            p("same", 80, 80, Protocol::Tcp),
            "same=80/tcp",
        ),
    ];
    for (input, want, display) in ok {
        let got: ServicePort = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(got, want, "{input}");
        assert_eq!(got.to_string(), display);
        assert_eq!(display.parse::<ServicePort>().unwrap(), want, "round trip");
        let json = serde_json::to_string(&got).unwrap();
        assert_eq!(json, format!("\"{display}\""));
        assert_eq!(serde_json::from_str::<ServicePort>(&json).unwrap(), want);
    }
    let bad = [
        "http",
        "=80",
        "http=",
        "http=0",
        "http=80:0",
        "http=0:80",
        "http=65536",
        "http=-1",
        "http=+80",
        "http=80:",
        "http=:80",
        "http=80/",
        "http=80/HTTP",
        "http=80/sctp",
        "Http=80",
        "http=80:81:82",
        "a-very-long-port-name=80",
        "http = 80",
    ];
    for input in bad {
        assert!(
            input.parse::<ServicePort>().is_err(),
            "{input:?} should fail"
        );
    }
    assert!(matches!(
        "http=0".parse::<ServicePort>(),
        Err(InvalidPort::Number { what: "port", .. })
    ));
    assert!(matches!(
        "http".parse::<ServicePort>(),
        Err(InvalidPort::Shape { .. })
    ));
    assert!(matches!(
        "Http=80".parse::<ServicePort>(),
        Err(InvalidPort::Name(_))
    ));
}

#[test]
fn endpoints() {
    let ok = [
        ("127.0.0.1", "127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1:8080", "127.0.0.1", Some(8080), "127.0.0.1:8080"),
        ("::1", "::1", None, "::1"),
        ("[::1]:8080", "::1", Some(8080), "[::1]:8080"),
        ("fd00::5", "fd00::5", None, "fd00::5"),
    ];
    for (input, ip, port, display) in ok {
        let e: EndpointAddr = input.parse().unwrap_or_else(|err| panic!("{input}: {err}"));
        assert_eq!(e.ip, ip.parse::<IpAddr>().unwrap());
        assert_eq!(e.port, port);
        assert_eq!(e.to_string(), display);
        assert_eq!(display.parse::<EndpointAddr>().unwrap(), e);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<EndpointAddr>(&json).unwrap(), e);
    }
    let bad = [
        "",
        "localhost",
        "localhost:80",
        "1.2.3",
        "1.2.3.4:",
        "1.2.3.4:65536",
        "::1:8080:x",
        "[::1]",
        "1.2.3.4:abc",
        " 1.2.3.4",
    ];
    for input in bad {
        assert!(
            matches!(
                input.parse::<EndpointAddr>(),
                Err(InvalidEndpoint::Syntax { .. })
            ),
            "{input:?}"
        );
    }
    assert!(matches!(
        "1.2.3.4:0".parse::<EndpointAddr>(),
        Err(InvalidEndpoint::ZeroPort { .. })
    ));

    let port: ServicePort = "http=80:8080/http".parse().unwrap();
    let plain: EndpointAddr = "10.0.0.1".parse().unwrap();
    let explicit: EndpointAddr = "10.0.0.1:9090".parse().unwrap();
    assert_eq!(plain.target(&port), "10.0.0.1:8080".parse().unwrap());
    assert_eq!(explicit.target(&port), "10.0.0.1:9090".parse().unwrap());
}

fn name(s: &str) -> ServiceName {
    s.parse().unwrap()
}
fn ports(list: &[&str]) -> Vec<ServicePort> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}
fn eps(list: &[&str]) -> Vec<EndpointAddr> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}

#[test]
fn service_specs() {
    type Check = fn(&Result<ServiceSpec, InvalidService>) -> bool;
    let cases: Vec<(Vec<ServicePort>, Vec<EndpointAddr>, Check)> = vec![
        (ports(&["http=80"]), eps(&["10.0.0.1", "10.0.0.2"]), |r| {
            r.is_ok()
        }),
        (ports(&["http=80"]), eps(&["10.0.0.1:8080"]), |r| r.is_ok()),
        (ports(&["http=80", "grpc=81"]), eps(&[]), |r| r.is_ok()),
        (ports(&[]), eps(&["10.0.0.1"]), |r| {
            matches!(r, Err(InvalidService::NoPorts { .. }))
        }),
        (ports(&["http=80", "http=81"]), eps(&[]), |r| {
            matches!(r, Err(InvalidService::DuplicatePortName { .. }))
        }),
        (ports(&["http=80", "web=80"]), eps(&[]), |r| {
            matches!(r, Err(InvalidService::DuplicatePortNumber { port: 80, .. }))
        }),
        (
            ports(&["http=80", "grpc=81"]),
            eps(&["10.0.0.1:8080"]),
            |r| matches!(r, Err(InvalidService::EndpointPortAmbiguous { .. })),
        ),
        (ports(&["http=80"]), eps(&["10.0.0.1", "10.0.0.1"]), |r| {
            matches!(r, Err(InvalidService::DuplicateEndpoint { .. }))
        }),
    ];
    for (i, (p, e, check)) in cases.into_iter().enumerate() {
        let r = ServiceSpec::new(name("web.shop"), p, e);
        assert!(check(&r), "case {i}: {r:?}");
    }
    let e = ServiceSpec::new(name("web.shop"), vec![], vec![]).unwrap_err();
    assert!(e.to_string().contains("web.shop"), "{e}");
}

#[test]
fn service_spec_lookup_and_serde() {
    let spec = ServiceSpec::new(
        name("web.shop"),
        ports(&["http=80:8080/http", "grpc=9090/grpc"]),
        eps(&["10.0.0.1", "10.0.0.2"]),
    )
    .unwrap();
    assert_eq!(spec.port_by_number(80).unwrap().target_port, 8080);
    assert!(spec.port_by_number(8080).is_none());
    assert_eq!(
        spec.port_by_name(&PortName::new("grpc").unwrap())
            .unwrap()
            .port,
        9090
    );
    assert!(spec.port_by_name(&PortName::new("nope").unwrap()).is_none());

    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(serde_json::from_str::<ServiceSpec>(&json).unwrap(), spec);

    let dup = r#"{"name":"web.shop","ports":["http=80","web=80"],"endpoints":[]}"#;
    let err = serde_json::from_str::<ServiceSpec>(dup).unwrap_err();
    assert!(err.to_string().contains("port 80 twice"), "{err}");
    let unknown = r#"{"name":"web.shop","ports":["http=80"],"extra":1}"#;
    assert!(serde_json::from_str::<ServiceSpec>(unknown).is_err());
    let no_eps = r#"{"name":"web.shop","ports":["http=80"]}"#;
    assert!(serde_json::from_str::<ServiceSpec>(no_eps)
        .unwrap()
        .endpoints
        .is_empty());
}

#[test]
fn endpoints_with_hostnames() {
    let ok = [
        ("kafka-0=10.0.0.5", "kafka-0", "10.0.0.5", None),
        ("kafka-0=10.0.0.5:9092", "kafka-0", "10.0.0.5", Some(9092)),
        ("b=[fd00::5]:9092", "b", "fd00::5", Some(9092)),
        ("0=fd00::5", "0", "fd00::5", None),
    ];
    for (input, host, ip, port) in ok {
        let e: EndpointAddr = input.parse().unwrap_or_else(|err| panic!("{input}: {err}"));
        assert_eq!(e.hostname.as_ref().map(Label::as_str), Some(host));
        assert_eq!(e.ip, ip.parse::<IpAddr>().unwrap());
        assert_eq!(e.port, port);
        assert_eq!(e.to_string(), input, "Display round-trips");
        assert_eq!(e.hostname_or_default().as_str(), host);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<EndpointAddr>(&json).unwrap(), e);
    }
    for bad in [
        "=10.0.0.5",
        "Kafka=10.0.0.5",
        "ka_fka=10.0.0.5",
        "-k=10.0.0.5",
    ] {
        let e = bad.parse::<EndpointAddr>().unwrap_err();
        assert!(
            matches!(e, InvalidEndpoint::Hostname { .. }),
            "{bad}: {e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("<hostname>=<ip>[:<port>]"), "{msg}");
    }
    for bad in ["k=", "k=host", "k=10.0.0.5=1", "k=[::1]"] {
        let e = bad.parse::<EndpointAddr>().unwrap_err();
        assert!(matches!(e, InvalidEndpoint::Syntax { .. }), "{bad}: {e:?}");
        assert!(e.to_string().contains("kafka-0=10.0.0.5:9092"), "{e}");
    }
    assert!(matches!(
        "k=1.2.3.4:0".parse::<EndpointAddr>(),
        Err(InvalidEndpoint::ZeroPort { .. })
    ));
}

#[test]
fn default_hostnames_are_dashed_ips() {
    let cases = [
        ("10.0.0.5", "10-0-0-5"),
        ("10.0.0.5:8080", "10-0-0-5"),
        ("fd00::5", "fd00--5"),
        ("::1", "0--1"),
        ("fd00::", "fd00--0"),
        ("::", "0--0"),
        ("::ffff:10.0.0.5", "0--ffff-10-0-0-5"),
        (
            "[2001:db8:85a3:1:2:8a2e:370:7334]:1",
            "2001-db8-85a3-1-2-8a2e-370-7334",
        ),
    ];
    for (input, want) in cases {
        let e: EndpointAddr = input.parse().unwrap();
        assert_eq!(e.hostname_or_default().as_str(), want, "{input}");
    }
}

#[test]
fn headless_specs_need_unique_hostnames() {
    type Check = fn(&Result<ServiceSpec, InvalidService>) -> bool;
    let cases: Vec<(bool, Vec<EndpointAddr>, Check)> = vec![
        (
            true,
            eps(&["k-0=10.0.0.1", "k-1=10.0.0.2", "10.0.0.3"]),
            |r| r.as_ref().is_ok_and(|s| s.headless),
        ),
        (
            true,
            eps(&["k-0=10.0.0.1", "k-0=10.0.0.2"]),
            |r| matches!(r, Err(InvalidService::DuplicateHostname { hostname, .. }) if hostname.as_str() == "k-0"),
        ),
        (true, eps(&["10.0.0.1", "10-0-0-1=10.0.0.2"]), |r| {
            matches!(r, Err(InvalidService::DuplicateHostname { .. }))
        }),
        (true, eps(&["10.0.0.1:80", "10.0.0.1:81"]), |r| {
            matches!(r, Err(InvalidService::DuplicateHostname { .. }))
        }),
        (false, eps(&["k-0=10.0.0.1", "k-0=10.0.0.2"]), |r| {
            r.as_ref().is_ok_and(|s| !s.headless)
        }),
        (true, eps(&["a=10.0.0.1", "b=10.0.0.1"]), |r| {
            matches!(r, Err(InvalidService::DuplicateEndpoint { .. }))
        }),
    ];
    for (i, (headless, e, check)) in cases.into_iter().enumerate() {
        let r = ServiceSpec::with_headless(name("kafka.data"), ports(&["b=9092"]), e, headless);
        assert!(check(&r), "case {i}: {r:?}");
    }
    let e = ServiceSpec::with_headless(
        name("kafka.data"),
        ports(&["b=9092"]),
        eps(&["k=10.0.0.1", "k=10.0.0.2"]),
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("kafka.data") && e.contains("<hostname>=<ip>"),
        "{e}"
    );

    let spec = ServiceSpec::with_headless(
        name("kafka.data"),
        ports(&["b=9092"]),
        eps(&["k-0=10.0.0.1", "10.0.0.2"]),
        true,
    )
    .unwrap();
    let k0 = spec
        .endpoint_by_hostname(&Label::new("k-0").unwrap())
        .unwrap();
    assert_eq!(k0.ip, "10.0.0.1".parse::<IpAddr>().unwrap());
    assert!(spec
        .endpoint_by_hostname(&Label::new("10-0-0-2").unwrap())
        .is_some());
    assert!(spec
        .endpoint_by_hostname(&Label::new("k-1").unwrap())
        .is_none());
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(serde_json::from_str::<ServiceSpec>(&json).unwrap(), spec);
    let dup =
        r#"{"name":"k.d","ports":["b=1"],"endpoints":["a=10.0.0.1","a=10.0.0.2"],"headless":true}"#;
    assert!(serde_json::from_str::<ServiceSpec>(dup).is_err());
    let stored_before_headless = r#"{"name":"k.d","ports":["b=1"],"endpoints":["10.0.0.1"]}"#;
    assert!(
        !serde_json::from_str::<ServiceSpec>(stored_before_headless)
            .unwrap()
            .headless
    );
}
