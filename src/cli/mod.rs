//! The `ferry` command line: argument parsing (clap) and the admin verbs, each a call to
//! the control plane's API rendered as a table or JSON (`-o table|json`).

mod admin;
mod check;
mod links;
mod policy;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use admin::run_admin;

/// How long-running roles write their logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format of the admin verbs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry: a multi-cluster service mesh over QUIC"
)]
pub struct Cli {
    /// Control plane socket (default: from --config, else /run/ferry/control.sock).
    #[arg(long, global = true, env = "FERRY_CONTROL")]
    pub control: Option<PathBuf>,
    /// Cluster config file (its control.socket is used when --control is not given).
    #[arg(long, global = true, env = "FERRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Worker threads of a long-running role (default: one per core). One thread, as
    /// nginx's `worker_processes 1` or HAProxy's `nbthread 1`, saves the wakeups that pass
    /// work between threads when a node runs several processes on few cores.
    #[arg(long, global = true, env = "FERRY_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Log format of long-running roles (on standard error).
    #[arg(long, global = true, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or filter (`debug`, `warn`, `ferry_proxy=debug,info`; default: RUST_LOG,
    /// else info for roles and warn for commands).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a multi-cluster mesh on loopback and make a real cross-cluster call.
    Demo {
        /// Stay up after the call and print commands to try by hand.
        #[arg(long)]
        keep: bool,
    },
    /// Run a whole cluster in one process: control plane, gateway, node proxy.
    Up,
    /// Run the control plane alone.
    Control,
    /// Run a gateway alone (finds the control plane by config).
    Gateway,
    /// Run a node proxy alone (finds the control plane by config).
    Node,
    /// Run the mesh DNS server alone (finds the control plane by config; listens on [dns] listen).
    Dns,
    /// Mesh root and cluster CAs.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Add or remove a local service.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// List local and imported services.
    Services,
    /// Make a local service visible to linked clusters.
    Export { service: String },
    /// Stop exporting a service.
    Unexport { service: String },
    /// Links with other clusters.
    #[command(subcommand)]
    Link(LinkCommand),
    /// Where a service's calls go and how failures are handled (set in the calling cluster).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// This cluster's status.
    Status,
    /// One row per linked peer, live from the link sessions: alive, services, RTT, last seen.
    Gateways,
    /// Checks trust, links, services, DNS and the data plane; each finding has a stable code
    /// (FERRY1xx trust, 2xx links, 3xx services and DNS, 4xx data plane) and a fix. Exits
    /// non-zero when a check fails.
    Check {
        /// Keep checking until everything passes or this long has gone by (e.g. 60s).
        #[arg(long, value_name = "DURATION")]
        wait: Option<String>,
    },
    /// A tiny HTTP server answering every request with its name: a backend to try the mesh.
    SampleHttp {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Create a mesh root CA.
    Init {
        #[arg(long)]
        trust_domain: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Create a cluster's intermediate CA from the root.
    Issue {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        out: PathBuf,
        /// How long the cluster CA is valid (default 1 year; never past the root's end).
        #[arg(long, value_name = "DURATION")]
        valid_for: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Add (or replace) a local service.
    Add {
        /// <name>.<namespace>, e.g. web.shop
        name: String,
        /// name=port[:target]/proto, e.g. http=8080/http (repeatable)
        #[arg(long = "port", required = true)]
        ports: Vec<String>,
        /// ip, ip:port or hostname=ip[:port] of an instance (repeatable)
        #[arg(long = "endpoint")]
        endpoints: Vec<String>,
        /// Export it to linked clusters right away.
        #[arg(long)]
        export: bool,
        /// Headless: every endpoint gets its own VIP and DNS name
        /// (<hostname>.<cluster>.<name>.<namespace>.svc.<zone>); hostnames must be unique.
        #[arg(long)]
        headless: bool,
    },
    /// Remove a local service.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Change a service's policy; what is not given stays as it was.
    Set {
        /// <name>.<namespace>, e.g. web.shop
        service: String,
        /// Local endpoints first, then the nearest cluster that has healthy ones (default).
        #[arg(long, group = "split")]
        failover: bool,
        /// Only this cluster's endpoints.
        #[arg(long, group = "split")]
        local_only: bool,
        /// Only the named cluster's endpoints (this cluster's name: local ones).
        #[arg(long, group = "split", value_name = "CLUSTER")]
        pinned: Option<String>,
        /// Split calls by weight, e.g. east=90,west=10 (a side with no healthy endpoint
        /// fails over to the others; weight 0: failover only).
        #[arg(long, group = "split", value_name = "CLUSTER=WEIGHT,...")]
        weights: Option<String>,
        /// Header route, evaluated before the split: 'x-canary=1 -> west' (repeatable;
        /// replaces every route).
        #[arg(long = "route", value_name = "'HEADER=VALUE -> CLUSTER'")]
        routes: Vec<String>,
        /// Remove every header route.
        #[arg(long, conflicts_with = "routes")]
        no_routes: bool,
        /// Whole-request timeout, e.g. 2s (`none` removes it).
        #[arg(long)]
        timeout: Option<String>,
        /// How many times a failed request may be sent again (0 to 5).
        #[arg(long)]
        retries: Option<u32>,
        /// Which failures are retried: 5xx, reset, unavailable (comma-separated).
        #[arg(long, value_name = "LIST")]
        retry_on: Option<String>,
    },
    /// Show the policies set here (or one service's).
    Show { service: Option<String> },
    /// Clear a service's policy: it goes back to failover.
    Clear { service: String },
}

#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// Print a single-use, short-lived token for `ferry link join` on the peer.
    Create {
        #[arg(long)]
        peer: String,
        /// Token lifetime, e.g. 15m (at most 24h).
        #[arg(long, default_value = "15m")]
        ttl: String,
    },
    /// Join the cluster that issued a token, read from --token-file or standard input.
    Join {
        /// The token itself (works, but other local users can read a command line: prefer
        /// --token-file or standard input).
        token: Option<String>,
        /// A file holding the token (`-` for standard input).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// List links.
    List,
    /// Each link in full: state and since when, last error, limits hit, imported and
    /// exported counts, certificate and root fingerprints on both sides.
    Status { peer: Option<String> },
    /// Remove a link; the peer's open streams close within 2 s.
    Remove { peer: String },
}
