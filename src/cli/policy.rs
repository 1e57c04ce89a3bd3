//! `ferry policy set / show / clear`: a service's traffic policy, rendered as a table or
//! JSON (stable field names).

use serde_json::json;

use super::admin::{done, print_table};
use super::{Output, PolicyCommand};
use crate::client::{status_error, Client};
use crate::pb;

fn policy_json(p: &pb::PolicyInfo) -> serde_json::Value {
    json!({
        "service": p.service,
        "split": p.split,
        "routes": p.routes,
        "timeout": (!p.timeout.is_empty()).then_some(&p.timeout),
        "retries": p.retries,
        "retry_on": p.retry_on,
        "declared": p.declared,
        "known": p.known,
    })
}

fn print_policies(out: Output, policies: &[pb::PolicyInfo]) -> anyhow::Result<()> {
    if out == Output::Json {
        let all: Vec<_> = policies.iter().map(policy_json).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let rows = policies
        .iter()
        .map(|p| {
            vec![
                p.service.clone(),
                p.split.clone(),
                if p.routes.is_empty() {
                    "-".into()
                } else {
                    p.routes.join("; ")
                },
                if p.timeout.is_empty() {
                    "-".into()
                } else {
                    p.timeout.clone()
                },
                match p.retries {
                    0 => "-".into(),
                    n => format!("{n} on {}", p.retry_on.join(",")),
                },
                match (p.declared, p.known) {
                    (true, _) => "config file".into(),
                    (false, true) => "cli".into(),
                    (false, false) => "cli (service not known yet)".into(),
                },
            ]
        })
        .collect();
    print_table(
        &["SERVICE", "SPLIT", "ROUTES", "TIMEOUT", "RETRIES", "SET BY"],
        rows,
    );
    Ok(())
}

/// Runs one `ferry policy` verb.
pub(super) async fn run(c: &mut Client, out: Output, cmd: &PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Set {
            service,
            failover,
            local_only,
            pinned,
            weights,
            routes,
            no_routes,
            timeout,
            retries,
            retry_on,
        } => {
            let split = if *failover {
                Some("failover".to_string())
            } else if *local_only {
                Some("local-only".to_string())
            } else if let Some(cluster) = pinned {
                Some(format!("pinned={cluster}"))
            } else {
                weights.as_ref().map(|w| format!("weights={w}"))
            };
            let info = c
                .set_policy(pb::SetPolicyRequest {
                    name: service.clone(),
                    split,
                    routes: routes.clone(),
                    replace_routes: *no_routes || !routes.is_empty(),
                    timeout: timeout.clone(),
                    retries: *retries,
                    retry_on: retry_on.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if !info.known {
                eprintln!(
                    "note: no service {service} is known here yet; the policy applies once it is added or imported"
                );
            }
            print_policies(out, &[info])?;
        }
        PolicyCommand::Show { service } => {
            let list = c
                .list_policies(pb::ServiceRef {
                    name: service.clone().unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if let (Some(name), true) = (service, list.policies.is_empty()) {
                if out == Output::Table {
                    println!("{name} has no policy: failover (local endpoints first, then the nearest cluster)");
                    return Ok(());
                }
            }
            print_policies(out, &list.policies)?;
        }
        PolicyCommand::Clear { service } => {
            c.clear_policy(pb::ServiceRef {
                name: service.clone(),
            })
            .await
            .map_err(status_error)?;
            done(out, &format!("policy of {service} cleared: failover"));
        }
    }
    Ok(())
}
