//! The admin verbs: calls to the control plane rendered for people or scripts.

use std::path::PathBuf;

use anyhow::Context as _;
use comfy_table::Table;
use serde_json::json;

use super::{Cli, Command, LinkCommand, Output, ServiceCommand};
use crate::client::{self, status_error};
use crate::config::{parse_duration, Config};
use crate::pb;

/// Where the control plane's socket is: --control, else the config's, else the default.
pub fn control_socket(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(p) = &cli.control {
        return Ok(p.clone());
    }
    if let Some(cfg) = &cli.config {
        return Ok(Config::load(cfg)?.socket);
    }
    Ok(PathBuf::from("/run/ferry/control.sock"))
}

pub(super) fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(header.to_vec());
    for r in rows {
        table.add_row(r);
    }
    println!("{table}");
}

fn service_json(s: &pb::ServiceInfo) -> serde_json::Value {
    json!({
        "name": s.name,
        "vip": s.vip,
        "ports": s.ports,
        "exported": s.exported,
        "local": s.local.iter().map(|e| json!({"addr": e.addr, "healthy": e.healthy})).collect::<Vec<_>>(),
        "remote": s.remote.iter().map(|r| json!({"cluster": r.cluster, "healthy": r.healthy})).collect::<Vec<_>>(),
        "headless": s.headless,
        "endpoints": s.endpoints.iter().map(|e| json!({
            "cluster": e.cluster, "hostname": e.hostname, "vip": e.vip, "healthy": e.healthy,
        })).collect::<Vec<_>>(),
        "conflicts": s.conflicts.iter().map(|c| json!({
            "cluster": c.cluster, "reason": c.reason,
        })).collect::<Vec<_>>(),
        "listen_errors": s.listen_errors,
    })
}

fn link_json(l: &pb::LinkInfo) -> serde_json::Value {
    json!({
        "peer": l.peer,
        "gateways": l.gateways,
        "connected": l.connected,
        "created_at_unix": l.created_at_unix,
        "imported_services": l.imported_services,
        "limited": l.limited,
    })
}

fn print_services(out: Output, services: &[pb::ServiceInfo]) {
    if out == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&services.iter().map(service_json).collect::<Vec<_>>())
                .unwrap_or_default()
        );
        return;
    }
    let rows = services
        .iter()
        .map(|s| {
            let healthy = s.local.iter().filter(|e| e.healthy).count();
            let remote = s
                .remote
                .iter()
                .map(|r| {
                    format!(
                        "{}({})",
                        r.cluster,
                        r.healthy.values().max().copied().unwrap_or(0)
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            vec![
                s.name.clone(),
                s.vip.clone(),
                s.ports.join(","),
                if s.exported {
                    "yes".into()
                } else {
                    "no".into()
                },
                format!("{healthy}/{}", s.local.len()),
                if remote.is_empty() {
                    "-".into()
                } else {
                    remote
                },
                if s.headless {
                    let healthy = s.endpoints.iter().filter(|e| e.healthy).count();
                    format!("{healthy}/{}", s.endpoints.len())
                } else {
                    "-".into()
                },
                if s.conflicts.is_empty() {
                    "-".into()
                } else {
                    s.conflicts
                        .iter()
                        .map(|c| c.reason.clone())
                        .collect::<Vec<_>>()
                        .join("; ")
                },
                if s.listen_errors.is_empty() {
                    "-".into()
                } else {
                    s.listen_errors.join("; ")
                },
            ]
        })
        .collect();
    print_table(
        &[
            "SERVICE",
            "VIP",
            "PORTS",
            "EXPORTED",
            "LOCAL HEALTHY",
            "REMOTE (healthy)",
            "ENDPOINT VIPS (healthy)",
            "CONFLICTS",
            "CANNOT LISTEN",
        ],
        rows,
    );
}

/// Runs one admin verb against the control plane.
pub async fn run_admin(cli: &Cli) -> anyhow::Result<()> {
    let socket = control_socket(cli)?;
    if let Command::Check { wait } = &cli.command {
        return super::check::run(&socket, cli.output, wait.as_deref()).await;
    }
    let mut c = client::connect(&socket).await?;
    let out = cli.output;
    match &cli.command {
        Command::Service(ServiceCommand::Add {
            name,
            ports,
            endpoints,
            export,
            headless,
        }) => {
            let info = c
                .add_service(pb::AddServiceRequest {
                    name: name.clone(),
                    ports: ports.clone(),
                    endpoints: endpoints.clone(),
                    export: *export,
                    headless: *headless,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            for note in [&info.replaced, &info.warning] {
                if !note.is_empty() {
                    eprintln!("{note}");
                }
            }
            print_services(out, &[info]);
        }
        Command::Service(ServiceCommand::Remove { name }) => {
            c.remove_service(pb::ServiceRef { name: name.clone() })
                .await
                .map_err(status_error)?;
            done(out, &format!("service {name} removed"));
        }
        Command::Services => {
            let list = c
                .list_services(pb::Empty {})
                .await
                .map_err(status_error)?
                .into_inner();
            print_services(out, &list.services);
        }
        Command::Export { service } => {
            c.export(pb::ServiceRef {
                name: service.clone(),
            })
            .await
            .map_err(status_error)?;
            done(out, &format!("service {service} exported"));
        }
        Command::Unexport { service } => {
            c.unexport(pb::ServiceRef {
                name: service.clone(),
            })
            .await
            .map_err(status_error)?;
            done(out, &format!("service {service} no longer exported"));
        }
        Command::Link(LinkCommand::Create { peer, ttl }) => {
            let ttl = parse_duration("--ttl", ttl)?;
            let reply = c
                .create_link_token(pb::CreateLinkTokenRequest {
                    peer: peer.clone(),
                    ttl_seconds: ttl.as_secs(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if out == Output::Json {
                println!(
                    "{}",
                    json!({"token": reply.token, "expires_at_unix": reply.expires_at_unix})
                );
            } else {
                println!("{}", reply.token);
                eprintln!(
                    "single-use token for `{peer}`, valid {}; on {peer} run: ferry link join <token>",
                    humantime::format_duration(ttl)
                );
            }
        }
        Command::Link(LinkCommand::Join { token, token_file }) => {
            let token = match (token, token_file) {
                (Some(t), None) => {
                    eprintln!("ferry: warning: a token on the command line is visible to other local users (ps, /proc); use --token-file <file> or standard input");
                    t.clone()
                }
                (None, Some(f)) if f.as_os_str() == "-" => read_token_stdin()?,
                (None, Some(f)) => std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read token file {}", f.display()))?,
                (Some(_), Some(_)) => anyhow::bail!(
                    "give the token either as an argument or with --token-file, not both"
                ),
                (None, None) => read_token_stdin()?,
            };
            let token = token.trim().to_owned();
            let info = c
                .join_link(pb::JoinLinkRequest { token })
                .await
                .map_err(status_error)?
                .into_inner();
            if out == Output::Json {
                println!("{}", link_json(&info));
            } else {
                println!(
                    "linked with {} (gateways {})",
                    info.peer,
                    info.gateways.join(", ")
                );
                if info.connected {
                    println!("link session up");
                } else {
                    println!(
                        "no link session yet; `ferry link status {}` shows its last error and `ferry check` what to do",
                        info.peer
                    );
                }
            }
        }
        Command::Link(LinkCommand::List) => {
            let list = c
                .list_links(pb::Empty {})
                .await
                .map_err(status_error)?
                .into_inner();
            if out == Output::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &list.links.iter().map(link_json).collect::<Vec<_>>()
                    )?
                );
            } else {
                let rows = list
                    .links
                    .iter()
                    .map(|l| {
                        let state = if l.connected { "connected" } else { "down" };
                        vec![
                            l.peer.clone(),
                            if l.limited.is_empty() {
                                state.into()
                            } else {
                                format!("{state}, limited: {}", l.limited.join("; "))
                            },
                            l.gateways.join(","),
                            l.imported_services.to_string(),
                        ]
                    })
                    .collect();
                print_table(&["PEER", "STATE", "GATEWAYS", "IMPORTED"], rows);
            }
        }
        Command::Link(LinkCommand::Status { peer }) => {
            super::links::status(&mut c, out, peer.as_deref()).await?
        }
        Command::Gateways => super::links::gateways(&mut c, out).await?,
        Command::Link(LinkCommand::Remove { peer }) => {
            c.remove_link(pb::LinkRef { peer: peer.clone() })
                .await
                .map_err(status_error)?;
            done(out, &format!("link to {peer} removed"));
        }
        Command::Status => {
            let s = c
                .status(pb::Empty {})
                .await
                .map_err(status_error)?
                .into_inner();
            if out == Output::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "cluster": s.cluster, "trust_domain": s.trust_domain, "gateways": s.gateways,
                        "services": s.services, "links": s.links, "snapshot_version": s.snapshot_version,
                        "bundle_fingerprint": s.bundle_fingerprint, "metrics": s.metrics,
                        "without_vip": s.without_vip,
                        "listen_errors": s.listen_errors,
                        "links_up": s.links_up, "exports": s.exports, "imports": s.imports,
                        "dns": s.dns,
                        "admin": s.admin.iter().map(|a| json!({"role": a.role, "addr": a.addr})).collect::<Vec<_>>(),
                    }))?
                );
            } else {
                print_table(
                    &[
                        "CLUSTER",
                        "TRUST DOMAIN",
                        "GATEWAYS",
                        "SERVICES",
                        "EXPORTS",
                        "IMPORTS",
                        "LINKS",
                        "SNAPSHOT",
                        "DNS",
                    ],
                    vec![vec![
                        s.cluster,
                        s.trust_domain,
                        s.gateways.join(","),
                        s.services.to_string(),
                        s.exports.to_string(),
                        s.imports.to_string(),
                        format!("{}/{} up", s.links_up, s.links),
                        s.snapshot_version.to_string(),
                        if s.dns.is_empty() {
                            "-".into()
                        } else {
                            s.dns.clone()
                        },
                    ]],
                );
                if !s.admin.is_empty() {
                    println!();
                    print_table(
                        &["ROLE", "ADMIN (/metrics /ready /live)"],
                        s.admin
                            .iter()
                            .map(|a| vec![a.role.clone(), format!("http://{}", a.addr)])
                            .collect(),
                    );
                }
                for e in &s.listen_errors {
                    eprintln!("the node proxy cannot listen on {e}");
                }
                if !s.without_vip.is_empty() {
                    eprintln!(
                        "{} names have no VIP because control.vip_range is full (first: {}); widen the range",
                        s.without_vip.len(),
                        s.without_vip[0]
                    );
                }
            }
        }
        Command::Policy(cmd) => super::policy::run(&mut c, out, cmd).await?,
        other => anyhow::bail!("not an admin verb: {other:?}"),
    }
    Ok(())
}

/// Reads a link token from standard input (the first non-empty line).
fn read_token_stdin() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("paste the link token and press Enter:");
    }
    for line in stdin.lock().lines() {
        let line = line.context("cannot read the token from standard input")?;
        if !line.trim().is_empty() {
            return Ok(line.trim().to_owned());
        }
    }
    anyhow::bail!(
        "no token on standard input: `ferry link join --token-file <file>`, or pipe the token in"
    )
}

pub(super) fn done(out: Output, msg: &str) {
    if out == Output::Json {
        println!("{}", json!({"ok": true, "message": msg}));
    } else {
        println!("{msg}");
    }
}
