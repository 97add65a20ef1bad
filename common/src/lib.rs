//! Domain types shared by the coordinator, the agent and the simulator.
//!
//! - [`agent`]: what crosses the agent boundary (round requests, round events, handshake);
//! - [`plan`]: the seed-compatible plan and per-scenario config files (raw -> validated);
//! - [`workload`]: deterministic workload generators for the five seed types;
//! - [`tokenizer`]: the documented tokenizer shared by the simulator and the generators;
//! - [`record`]: one request as the agent saw it, and its outcome class;
//! - [`stats`]: the statistics computed from records, and the stats file layout;
//! - [`telemetry`]: samples streamed with the records (engine metrics) and their summaries.

pub mod agent;
pub mod dataset;
pub mod isolation;
pub mod limits;
pub mod load;
pub mod plan;
pub mod process;
pub mod prometheus;
pub mod record;
pub mod results;
pub mod rng;
pub mod stats;
pub mod targets;
pub mod telemetry;
pub mod tokenizer;
pub mod util;

pub mod workload;
pub mod yaml_index;

/// Version of the agent protocol (`proto/kvbench/v1`). Agents and coordinators refuse peers
/// that speak another version. 2: rounds may carry a split share and a start time (an
/// agent of version 1 would ignore them and run the whole request set).
pub const PROTOCOL_VERSION: u32 = 2;
