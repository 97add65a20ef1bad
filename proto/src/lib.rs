//! kvbench's gRPC protocol (`proto/kvbench/v1/agent.proto`), generated at build time with
//! protox (no `protoc` needed). Nothing outside this crate uses the generated types
//! directly except the service plumbing; [`convert`] maps wire types to domain types.

pub mod convert;

/// Generated code for package `kvbench.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kvbench.v1");
}
