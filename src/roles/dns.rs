//! `ferry dns`: the mesh DNS server, fed by the control plane's snapshot stream.
//!
//! It needs no certificate: it reads the snapshot over the control plane's local socket and
//! answers from it. It starts answering at once (SERVFAIL for mesh names until the first
//! snapshot) and keeps answering from the last snapshot while the control plane is away.

use crate::config::Config;
use crate::roles::snapshots;

/// The file in the data directory that holds the DNS server's bound address.
pub const ADDR_FILE: &str = "dns.addr";

/// Runs the DNS server until the process ends.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let settings = cfg.dns_settings();
    let zone = settings.zone.origin.to_string();
    let server = ferry_dns::DnsServer::bind(settings).await?;
    let addr = server.local_addr();
    // Lets scripts and tests find a server started on port 0.
    let _ = std::fs::create_dir_all(&cfg.data_dir);
    // Written whole then renamed, so a reader never sees half an address.
    let tmp = cfg.data_dir.join(format!("{ADDR_FILE}.tmp"));
    let written = std::fs::write(&tmp, format!("{addr}\n"))
        .and_then(|()| std::fs::rename(&tmp, cfg.data_dir.join(ADDR_FILE)));
    if let Err(e) = written {
        tracing::warn!(error = %e, "could not record the DNS address in the data directory");
    }
    tracing::info!(%addr, %zone, "mesh DNS serving");
    eprintln!(
        "ferry: mesh DNS on {addr} (udp+tcp), zone {zone}; try: {}",
        dig_command(addr, &format!("<service>.<namespace>.svc.{zone}"))
    );
    let snapshots = snapshots::follow_lazy(cfg.watch_socket());
    // Ready once it answers mesh names: from the first snapshot on.
    let mut first = snapshots.clone();
    tokio::spawn(async move {
        if first.wait_for(Option::is_some).await.is_ok() {
            crate::admin::set_ready(crate::admin::Role::Dns, true);
        }
    });
    server.run(snapshots).await;
    Ok(())
}

/// The `dig` command that asks the server at `addr` for `name`.
pub fn dig_command(addr: std::net::SocketAddr, name: &str) -> String {
    format!("dig @{} -p {} {name}", addr.ip(), addr.port())
}
