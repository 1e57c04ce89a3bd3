//! The roles other than the control plane, run against the control plane's socket:
//! gateway, node proxy and DNS server. Each obtains its certificate from the
//! control plane, follows the snapshot stream, and keeps running on the last snapshot
//! if the control plane goes away.

pub mod dns;
pub mod gateway;
pub mod identity;
pub mod node;
pub mod snapshots;
