//! Generated protobuf and gRPC code for the control plane API (proto/control.proto).
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("ferry.control.v1");
