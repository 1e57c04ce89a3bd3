//! `ferry gateways` and `ferry link status [<peer>]`: the link sessions as this cluster's
//! gateways report them. Both exit non-zero when a peer they show is down, so a script can
//! wait on them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::admin::print_table;
use super::Output;
use crate::client::{status_error, Client};
use crate::pb;

async fn links(c: &mut Client, peer: Option<&str>) -> anyhow::Result<Vec<pb::LinkInfo>> {
    let all = c
        .list_links(pb::Empty {})
        .await
        .map_err(status_error)?
        .into_inner()
        .links;
    match peer {
        None => Ok(all),
        Some(p) => {
            let one: Vec<_> = all.into_iter().filter(|l| l.peer == p).collect();
            if one.is_empty() {
                anyhow::bail!("no link to `{p}`; `ferry link list` shows the linked peers");
            }
            Ok(one)
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// "3s ago", or "never".
fn ago(unix: u64) -> String {
    match unix {
        0 => "never".into(),
        t => format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(now_unix().saturating_sub(t)))
        ),
    }
}

fn rtt(us: u64) -> String {
    match us {
        0 => "-".into(),
        us => format!("{:.1}ms", us as f64 / 1000.0),
    }
}

fn down(links: &[pb::LinkInfo]) -> anyhow::Result<()> {
    let down: Vec<&str> = links
        .iter()
        .filter(|l| !l.connected)
        .map(|l| l.peer.as_str())
        .collect();
    if down.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "link down to {}; `ferry link status <peer>` shows its last error and `ferry check` what to do",
        down.join(", ")
    )
}

/// Prints one JSON object per link, as an array.
fn print_rows(
    links: &[pb::LinkInfo],
    row: impl Fn(&pb::LinkInfo) -> serde_json::Value,
) -> anyhow::Result<()> {
    let rows: Vec<_> = links.iter().map(row).collect();
    println!("{}", serde_json::to_string_pretty(&rows)?);
    Ok(())
}

/// `ferry gateways`: one row per linked peer.
pub(super) async fn gateways(c: &mut Client, out: Output) -> anyhow::Result<()> {
    let links = links(c, None).await?;
    match out {
        Output::Json => print_rows(&links, |l| {
            json!({
                        "peer": l.peer,
                        "alive": l.connected,
                        "services": l.imported_services,
                        "rtt_us": l.rtt_us,
                        "last_seen_unix": l.last_seen_unix,
                        "gateways": l.gateways,
            })
        })?,
        Output::Table => print_table(
            &["PEER", "ALIVE", "SERVICES", "RTT", "LAST_SEEN", "GATEWAYS"],
            links
                .iter()
                .map(|l| {
                    vec![
                        l.peer.clone(),
                        if l.connected { "yes" } else { "no" }.into(),
                        l.imported_services.to_string(),
                        rtt(l.rtt_us),
                        ago(l.last_seen_unix),
                        l.gateways.join(","),
                    ]
                })
                .collect(),
        ),
    }
    down(&links)
}

/// How many of the peer's roots this cluster's bundle holds too.
fn shared_roots(l: &pb::LinkInfo) -> usize {
    l.peer_roots_sha256
        .iter()
        .filter(|r| l.local_roots_sha256.contains(r))
        .count()
}

/// Whether the two bundles share a root; `None` until the peer has said which it holds.
fn shares_root(l: &pb::LinkInfo) -> Option<bool> {
    (!l.peer_roots_sha256.is_empty()).then(|| shared_roots(l) > 0)
}

/// `ferry link status [<peer>]`: each link in full.
pub(super) async fn status(c: &mut Client, out: Output, peer: Option<&str>) -> anyhow::Result<()> {
    let links = links(c, peer).await?;
    match out {
        Output::Json => print_rows(&links, |l| {
            json!({
                        "peer": l.peer,
                        "state": if l.connected { "up" } else { "down" },
                        "since_unix": l.up_since_unix,
                        "linked_at_unix": l.created_at_unix,
                        "last_error": l.last_error,
                        "last_error_unix": l.last_error_unix,
                        "limits_hit": l.limited,
                        "imported_services": l.imported_services,
                        "exported_services": l.exported_services,
                        "rtt_us": l.rtt_us,
                        "gateways": l.gateways,
                        "local": {"ca_sha256": l.local_ca_sha256, "bundle": l.bundle_sha256, "roots_sha256": l.local_roots_sha256},
                        "remote": {"cert_sha256": l.peer_cert_sha256, "ca_sha256": l.peer_ca_sha256, "roots_sha256": l.peer_roots_sha256},
                        "shares_root": shares_root(l),
            })
        })?,
        Output::Table => {
            for (i, l) in links.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                let state = match (l.connected, l.up_since_unix) {
                    (true, 0) => "up".to_string(),
                    (true, since) => format!("up for {}", ago(since).trim_end_matches(" ago")),
                    (false, _) => "down".to_string(),
                };
                let error = match l.last_error_unix {
                    0 => "none".to_string(),
                    at => format!("{} ({})", l.last_error, ago(at)),
                };
                let or_dash = |s: &str| {
                    if s.is_empty() {
                        "-".to_string()
                    } else {
                        s.to_string()
                    }
                };
                print_table(
                    &["LINK", &l.peer],
                    vec![
                        vec!["state".into(), state],
                        vec!["last error".into(), error],
                        vec![
                            "limits hit".into(),
                            if l.limited.is_empty() {
                                "none".into()
                            } else {
                                l.limited.join("; ")
                            },
                        ],
                        vec!["imported".into(), l.imported_services.to_string()],
                        vec!["exported".into(), l.exported_services.to_string()],
                        vec!["rtt".into(), rtt(l.rtt_us)],
                        vec!["peer gateways".into(), l.gateways.join(",")],
                        vec!["local cluster CA".into(), or_dash(&l.local_ca_sha256)],
                        vec!["local trust bundle".into(), or_dash(&l.bundle_sha256)],
                        vec![
                            "local roots".into(),
                            or_dash(&l.local_roots_sha256.join(", ")),
                        ],
                        vec!["peer gateway cert".into(), or_dash(&l.peer_cert_sha256)],
                        vec!["peer cluster CA".into(), or_dash(&l.peer_ca_sha256)],
                        vec![
                            "peer roots".into(),
                            or_dash(&l.peer_roots_sha256.join(", ")),
                        ],
                        vec![
                            "shared roots".into(),
                            match shares_root(l) {
                                None => "unknown (the peer has not said)".into(),
                                Some(_) => format!(
                                    "{} of the peer's {}",
                                    shared_roots(l),
                                    l.peer_roots_sha256.len()
                                ),
                            },
                        ],
                    ],
                );
            }
        }
    }
    down(&links)
}
