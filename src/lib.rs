//! Ferry: a multi-cluster service mesh. This crate wires the roles together: the
//! control plane, the CLI, `ferry up` (a whole cluster in one process) and `ferry demo`.
//! The decisions live in `ferry-federation`; the data plane in `ferry-gateway`,
//! `ferry-proxy` and `ferry-dns`.

pub mod admin;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod demo;
pub mod pb;
pub mod roles;
pub mod telemetry;
pub mod testkit;
pub mod trust;
pub mod up;
