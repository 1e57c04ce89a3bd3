//! `ferry check [--wait DURATION]`: the control plane's findings as a table grouped by
//! area (or JSON), exit status non-zero when a check fails. With `--wait` it asks again
//! until everything passes or the deadline, with a progress line on a terminal and nothing
//! in a pipe.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferry_federation::check::{passed, Finding, Status};
use serde_json::json;

use super::admin::print_table;
use super::Output;
use crate::client::{self, status_error};
use crate::pb;

/// Between two checks while waiting.
const RETRY_EVERY: Duration = Duration::from_millis(500);

pub(super) async fn run(socket: &Path, out: Output, wait: Option<&str>) -> anyhow::Result<()> {
    let deadline = match wait {
        Some(w) => {
            let d = humantime::parse_duration(w).with_context(|| {
                format!("invalid --wait `{w}`: expected a duration such as 60s or 2m")
            })?;
            Some(Instant::now() + d)
        }
        None => None,
    };
    let progress = (deadline.is_some() && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message("checking");
        bar
    });
    let findings = loop {
        let attempt = once(socket).await;
        let done = match &attempt {
            Ok(findings) => passed(findings),
            Err(_) => false,
        };
        let out_of_time = deadline.is_none_or(|d| Instant::now() >= d);
        if done || out_of_time {
            break attempt;
        }
        if let Some(bar) = &progress {
            bar.set_message(match &attempt {
                Ok(findings) => format!("waiting for: {}", failing(findings).join(", ")),
                Err(e) => format!("waiting for the control plane: {e:#}"),
            });
        }
        tokio::time::sleep(RETRY_EVERY).await;
    };
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let findings = findings?;
    let ok = passed(&findings);
    match out {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({"passed": ok, "findings": findings}))?
        ),
        Output::Table => print_findings(&findings),
    }
    if ok {
        Ok(())
    } else {
        anyhow::bail!(
            "{} failed ({}); each line above says how to fix it",
            failing(&findings).join(", "),
            match wait {
                Some(w) => format!("still after waiting {w}"),
                None => "`--wait 60s` keeps checking while the cluster settles".to_string(),
            }
        )
    }
}

async fn once(socket: &Path) -> anyhow::Result<Vec<Finding>> {
    let mut c = client::connect(socket).await?;
    let reply = c
        .check(pb::Empty {})
        .await
        .map_err(status_error)?
        .into_inner();
    serde_json::from_str(&reply.findings_json).context("the control plane's findings are malformed")
}

/// The codes of the failing checks, once each.
fn failing(findings: &[Finding]) -> Vec<String> {
    let mut codes: Vec<String> = findings
        .iter()
        .filter(|f| f.status == Status::Fail)
        .map(|f| f.code.clone())
        .collect();
    codes.dedup();
    codes
}

fn print_findings(findings: &[Finding]) {
    let rows = findings
        .iter()
        .map(|f| {
            vec![
                f.group.as_str().to_string(),
                f.status.to_string(),
                f.code.clone(),
                f.detail.clone(),
                f.fix.clone(),
            ]
        })
        .collect();
    print_table(&["GROUP", "STATUS", "CODE", "FINDING", "FIX"], rows);
}
