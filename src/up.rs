//! `ferry up` and the single-role commands: run a cluster's roles.
//!
//! `ferry up` runs the control plane, a gateway, a node proxy and the DNS server (unless
//! `[dns] enabled = false`) in one process; each
//! role still talks to the control plane over its socket, exactly as when the roles run
//! as separate processes (`ferry control|gateway|node`).

use std::future::Future;

use crate::admin::{self, Role};
use crate::config::Config;
use crate::control::{self, ControlPlane};
use crate::roles;

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

async fn until_stopped(role: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::select! {
        r = role => r,
        _ = shutdown_signal() => Ok(()),
    }
}

/// `ferry control`: the control plane alone.
pub async fn control(cfg: Config) -> anyhow::Result<()> {
    admin::expect(Role::Control);
    admin::start(&cfg, Role::Control).await?;
    let cp = ControlPlane::open(cfg)?;
    control::serve(cp, shutdown_signal()).await
}

/// `ferry gateway`.
pub async fn gateway(cfg: Config) -> anyhow::Result<()> {
    ferry_gateway::access::set_mode(cfg.access_log);
    admin::expect(Role::Gateway);
    admin::start(&cfg, Role::Gateway).await?;
    until_stopped(roles::gateway::run(cfg)).await
}

/// `ferry node`: on SIGTERM it stops listening and drains open connections.
pub async fn node(cfg: Config) -> anyhow::Result<()> {
    ferry_gateway::access::set_mode(cfg.access_log);
    admin::expect(Role::Node);
    admin::start(&cfg, Role::Node).await?;
    roles::node::run(cfg, shutdown_signal()).await
}

/// `ferry dns`.
pub async fn dns(cfg: Config) -> anyhow::Result<()> {
    admin::expect(Role::Dns);
    admin::start(&cfg, Role::Dns).await?;
    until_stopped(roles::dns::run(cfg)).await
}

/// `ferry up`: every role of the cluster in this process.
pub async fn up(cfg: Config) -> anyhow::Result<()> {
    ferry_gateway::access::set_mode(cfg.access_log);
    for role in [Role::Control, Role::Gateway, Role::Node] {
        admin::expect(role);
    }
    if cfg.dns.enabled {
        admin::expect(Role::Dns);
    }
    let admin_addr = admin::start(&cfg, Role::Up).await?;
    let cp = ControlPlane::open(cfg.clone())?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(control::serve(cp, async {
        let _ = stop_rx.await;
    }));
    // The roles connect over the sockets; wait until the last one bound answers.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::UnixStream::connect(cfg.watch_socket())
        .await
        .is_err()
    {
        if server.is_finished() {
            return server.await?;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the control plane did not start listening on {}",
                cfg.socket.display()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let gateway = tokio::spawn(roles::gateway::run(cfg.clone()));
    let mut node = tokio::spawn(roles::node::run(cfg.clone(), async move {
        let mut rx = stopping_rx;
        let _ = rx.wait_for(|stop| *stop).await;
    }));
    let dns = if cfg.dns.enabled {
        tokio::spawn(roles::dns::run(cfg.clone()))
    } else {
        tokio::spawn(std::future::pending())
    };
    eprintln!(
        "ferry: cluster {} up (control socket {}, admin http://{admin_addr}/metrics)",
        cfg.cluster,
        cfg.socket.display()
    );
    let (gateway_abort, dns_abort) = (gateway.abort_handle(), dns.abort_handle());
    let result = tokio::select! {
        _ = shutdown_signal() => {
            // Stop taking connections, let open ones finish (at most node.drain_timeout),
            // then stop the roles before the control plane, so none of them reports a
            // failed call on the way down.
            let _ = stopping_tx.send(true);
            let _ = (&mut node).await;
            Ok(())
        }
        r = gateway => r.map_err(anyhow::Error::from).and_then(|r| r),
        r = &mut node => r.map_err(anyhow::Error::from).and_then(|r| r),
        r = dns => r.map_err(anyhow::Error::from).and_then(|r| r),
    };
    node.abort();
    gateway_abort.abort();
    dns_abort.abort();
    let _ = stop_tx.send(());
    let _ = server.await;
    result
}
