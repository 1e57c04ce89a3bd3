//! The `ferry` binary: one binary, several roles, and the CLI.

use std::process::ExitCode;

use clap::Parser;
use ferry::cli::{Cli, Command, TrustCommand};
use ferry::config::Config;

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let path = cli
        .config
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("this role needs --config <cluster.toml>"))?;
    Ok(Config::load(path)?)
}

/// Runs the command; a role gets the config `main` loaded (once, so the telemetry setup
/// and the role read the same file contents).
async fn run(cli: Cli, config: Option<anyhow::Result<Config>>) -> anyhow::Result<()> {
    let config = || config.unwrap_or_else(|| load_config(&cli));
    match &cli.command {
        Command::Demo { keep } => ferry::demo::run(*keep).await,
        Command::Up => ferry::up::up(config()?).await,
        Command::Control => ferry::up::control(config()?).await,
        Command::Gateway => ferry::up::gateway(config()?).await,
        Command::Node => ferry::up::node(config()?).await,
        Command::Dns => ferry::up::dns(config()?).await,
        Command::Trust(TrustCommand::Init { trust_domain, out }) => {
            let td = trust_domain
                .parse()
                .map_err(|e| anyhow::anyhow!("invalid --trust-domain `{trust_domain}`: {e}"))?;
            ferry::trust::init(&td, out)?;
            println!("mesh root CA for {td} written to {}", out.display());
            Ok(())
        }
        Command::Trust(TrustCommand::Issue {
            root,
            cluster,
            out,
            valid_for,
        }) => {
            let cluster = cluster
                .parse()
                .map_err(|e| anyhow::anyhow!("invalid --cluster `{cluster}`: {e}"))?;
            let validity = match valid_for {
                Some(v) => Some(humantime::parse_duration(v).map_err(|e| {
                    anyhow::anyhow!(
                        "invalid --valid-for `{v}`: {e}; expected a duration such as 365d or 8760h"
                    )
                })?),
                None => None,
            };
            ferry::trust::issue(root, &cluster, out, validity)?;
            println!("cluster CA for {cluster} written to {}", out.display());
            Ok(())
        }
        Command::SampleHttp { listen, name } => {
            ferry::demo::sample_http(*listen, name.clone()).await
        }
        _ => ferry::cli::run_admin(&cli).await,
    }
}

/// Long-running roles hold many sockets at once (QUIC connections, proxied TCP streams, DNS
/// TCP clients, forwarded queries); the usual soft limit of 1024 files is too low for a busy
/// `ferry up`, so raise it to the hard limit the system allows.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
}

/// The name of the role a command runs (for the spans' resource).
fn role_name(command: &Command) -> &'static str {
    match command {
        Command::Up => "up",
        Command::Control => "control",
        Command::Gateway => "gateway",
        Command::Node => "node",
        Command::Dns => "dns",
        _ => "cli",
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = !matches!(
        cli.command,
        Command::Up
            | Command::Control
            | Command::Gateway
            | Command::Node
            | Command::Dns
            | Command::SampleHttp { .. }
    );
    let default_filter = if quiet { "warn" } else { "info" };
    if !quiet {
        // Everything a running cluster creates (sockets, the store, data and token
        // directories, address files) is owner-only from the moment it exists.
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        raise_open_file_limit();
    }
    // One thread is a current-thread runtime: no work-stealing queues or cross-thread
    // wakeups, which cost a proxy on one core more than they give.
    let mut builder = match cli.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(threads));
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A role exports spans when its config names a collector (the exporter needs the
    // runtime); a config that does not load is reported by the role itself.
    let config = (!quiet).then(|| load_config(&cli));
    let export = config
        .as_ref()
        .and_then(|loaded| loaded.as_ref().ok())
        .and_then(|cfg| {
            Some(ferry::telemetry::Export {
                endpoint: cfg.otlp_endpoint.clone()?,
                cluster: cfg.cluster.to_string(),
                role: role_name(&cli.command).to_string(),
            })
        });
    let initialized = {
        let _in_runtime = runtime.enter();
        ferry::telemetry::init(
            cli.log_level.as_deref(),
            default_filter,
            cli.log_format,
            export.as_ref(),
        )
    };
    if let Err(e) = initialized {
        eprintln!("ferry: error: {e}");
        return ExitCode::from(2);
    }
    let outcome = runtime.block_on(async {
        let outcome = run(cli, config).await;
        ferry::telemetry::flush().await;
        outcome
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
