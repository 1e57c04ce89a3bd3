//! Addresses the data plane never connects to: this process's own admin listeners
//! (`/metrics`, `/ready`, `/live`). The control plane already refuses a service endpoint
//! that is one; this is the last line, for an endpoint registered before the listener took
//! its port.

use std::net::SocketAddr;
use std::sync::RwLock;

static PROTECTED: RwLock<Vec<SocketAddr>> = RwLock::new(Vec::new());

/// Adds `addr` to what this process never proxies to.
pub fn protect(addr: SocketAddr) {
    let mut list = PROTECTED.write().expect("guard lock");
    if !list.contains(&addr) {
        list.push(addr);
    }
}

/// Whether `target` reaches a protected listener: the same port on the same IP, or on
/// any IP when the listener is bound to the unspecified address.
pub fn is_protected(target: SocketAddr) -> bool {
    covers(&PROTECTED.read().expect("guard lock"), target)
}

/// Whether one of `listeners` answers on `target`.
pub fn covers(listeners: &[SocketAddr], target: SocketAddr) -> bool {
    listeners
        .iter()
        .any(|l| l.port() == target.port() && (l.ip() == target.ip() || l.ip().is_unspecified()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_port_on_the_same_or_any_address() {
        let l: Vec<SocketAddr> = vec![
            "127.0.0.1:9100".parse().unwrap(),
            "0.0.0.0:9200".parse().unwrap(),
        ];
        assert!(covers(&l, "127.0.0.1:9100".parse().unwrap()));
        assert!(!covers(&l, "127.0.0.2:9100".parse().unwrap()));
        assert!(!covers(&l, "127.0.0.1:9101".parse().unwrap()));
        assert!(covers(&l, "10.1.2.3:9200".parse().unwrap()));
    }
}
