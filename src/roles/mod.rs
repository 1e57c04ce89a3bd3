//! The roles other than the control plane, run against the control plane's socket:
//! gateway and node proxy (and, later, DNS). Each obtains its certificate from the
//! control plane, follows the snapshot stream, and keeps running on the last snapshot
//! if the control plane goes away.

pub mod gateway;
pub mod identity;
pub mod node;
pub mod snapshots;
