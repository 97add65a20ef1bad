//! kvbench's gRPC protocol (`proto/kvbench/v1/agent.proto`), generated at build time with
//! protox (no `protoc` needed). [`convert`] maps wire types to the domain types of
//! `kvbench_common::agent` and back; outside this crate only the two adapters name
//! generated types: the agent's gRPC service and the coordinator's agent client (a test,
//! `tests/layers.rs`, keeps it so, and the other import rules of the workspace).
//!
//! # Layout
//!
//! - [`v1`]: the generated types and service stubs;
//! - [`convert`]: every wire <-> domain conversion, errors as [`convert::InvalidWire`].
//!
//! May import: `kvbench_common` (the domain types it converts to).

pub mod convert;

/// Generated code for package `kvbench.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kvbench.v1");
}
