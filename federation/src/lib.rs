//! Ferry's pure core: every decision about clusters, exports, imports, trust and routes.
//!
//! This crate is to Ferry what `quinn-proto` is to quinn. It holds the validated domain
//! model ([`model`]), SPIFFE identities ([`spiffe`]), link tokens ([`token`]), wire formats
//! ([`wire`]), gateway admission ([`policy`]), the published mesh snapshot ([`snapshot`]),
//! the node proxy's routing decision ([`routing`]), the link/sync state machine ([`link`]) and
//! the control plane's import store ([`imports`]).
//!
//! It must not do I/O, read the clock or draw randomness: time (`Instant` or unix seconds) and
//! random bytes are passed in, results come back as values or through `poll_*` methods. The
//! shells (`gateway`, `proxy`, `dns`, the control plane) move the bytes.

pub mod imports;
pub mod link;
pub mod model;
pub mod policy;
pub mod routing;
pub mod snapshot;
pub mod spiffe;
pub mod token;
pub mod wire;

#[cfg(test)]
mod testutil;

pub use imports::ImportStore;
pub use link::{LinkConfig, LinkError, LinkEvent, LinkSync};
pub use model::{
    ClusterId, EndpointAddr, InvalidEndpoint, InvalidName, InvalidPort, InvalidService, Label,
    NodeName, PortName, Protocol, ServiceName, ServicePort, ServiceSpec, TrustDomain,
};
pub use policy::{admit, Refusal};
pub use routing::{plan, Hop, NoRoute, Plan, Target};
pub use snapshot::{
    build_snapshot, endpoint_keys, EndpointKey, EndpointRecord, EndpointState, LinkRecord,
    LocalService, MeshSnapshot, RemoteState, ServiceRecord, SnapshotInputs,
};
pub use spiffe::{Identity, InvalidSpiffeId, SpiffeId};
pub use token::{
    bundle_fingerprint, fingerprint_hex, join_proof, verify_join_proof, LinkToken, TokenError,
    TOKEN_PREFIX,
};
pub use wire::{
    encode_frame, ExportedEndpoint, ExportedService, FrameDecoder, GoodbyeReason, JoinMessage,
    LinkMessage, TunnelHeader, TunnelStatus, WireError, MAX_FRAME, MAX_HEADER, MAX_HOPS,
};
