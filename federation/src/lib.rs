//! Ferry's pure core: every decision about clusters, exports, imports, trust and routes.
//!
//! This crate is to Ferry what `quinn-proto` is to quinn. It holds the validated domain
//! model ([`model`]), SPIFFE identities ([`spiffe`]), link tokens ([`token`]), wire formats
//! ([`wire`]), gateway admission ([`policy`]), the bounds on what a peer may send
//! ([`limits`]), the MCS conflict rule ([`resolve`]), the published mesh snapshot
//! ([`snapshot`]), the node proxy's routing decision ([`routing`]) and per-call traffic
//! policy, balancing, ejection and retries ([`traffic`]), the link/sync state machine
//! ([`link`]) and the control plane's import store ([`imports`]).
//!
//! Layers, bottom up: `model` (domain types) ← `wire`, `limits`, `spiffe`, `token`,
//! `resolve` ← `link`, `imports` ← `snapshot` ← `routing`, `policy` ← `traffic`.
//!
//! It must not do I/O, read the clock or draw randomness: time (`Instant` or unix seconds) and
//! random bytes are passed in, results come back as values or through `poll_*` methods. The
//! shells (`gateway`, `proxy`, `dns`, the control plane) move the bytes.

#[doc(hidden)]
pub mod check;
pub mod fuzzing;
pub mod imports;
pub mod limits;
pub mod link;
pub mod model;
pub mod policy;
pub mod resolve;
pub mod routing;
pub mod snapshot;
pub mod spiffe;
pub mod token;
pub mod traffic;
pub mod wire;

#[cfg(test)]
mod testutil;

pub use imports::ImportStore;
pub use limits::{check_gateways, ImportLimits, LimitExceeded};
pub use link::{LinkConfig, LinkError, LinkEvent, LinkSync};
pub use model::{
    ClusterId, EndpointAddr, ExportedEndpoint, ExportedService, HeaderRoute, InvalidEndpoint,
    InvalidName, InvalidPolicy, InvalidPort, InvalidService, Label, LocalService, NodeName,
    PolicyEdit, PortName, Protocol, RetryOn, ServiceName, ServicePort, ServiceSpec, Split,
    TrafficPolicy, TrustDomain,
};
pub use policy::{admit, revoked, Refusal};
pub use resolve::{resolve, Conflict, ConflictReason, DefinedBy, Resolved};
pub use routing::{plan, Hop, NoRoute, Plan, Target};
pub use snapshot::{
    build_snapshot, endpoint_keys, EndpointKey, EndpointRecord, EndpointState, LinkRecord,
    MeshSnapshot, RemoteState, ServiceRecord, SnapshotInputs,
};
pub use spiffe::{Identity, InvalidSpiffeId, SpiffeId};
pub use token::{
    bundle_fingerprint, fingerprint_hex, join_proof, verify_join_proof, LinkToken, TokenError,
    TOKEN_PREFIX,
};
pub use wire::{
    encode_frame, Carries, FrameDecoder, GoodbyeReason, JoinMessage, LinkMessage, TunnelHeader,
    TunnelStatus, WireError, MAX_FRAME, MAX_HEADER, MAX_HOPS,
};
