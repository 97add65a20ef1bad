//! Domain types shared by the coordinator, the agent and the simulator: pure code, no
//! async runtime, no network (a test holds it so).
//!
//! # Layout
//!
//! - [`plan`]: the seed-compatible plan and per-scenario config files (raw -> validated,
//!   errors with file, line and key); [`yaml_index`]: the line of every key;
//! - [`workload`], [`dataset`], [`load`]: what a round sends and when (the five seed types,
//!   ShareGPT, Mooncake traces, JSONL; closed and open loops, arrival processes);
//! - [`agent`]: what crosses the agent boundary (round requests, round events, handshake);
//!   [`limits`]: the trust boundary, what an agent accepts;
//! - [`record`]: one request as the agent saw it, and its outcome class;
//! - [`stats`]: figures from samples (the one percentile, mean and variance, histograms,
//!   intervals, a round's accumulation); [`results`]: the stats file's schema;
//!   [`isolation`]: who judges a cold start; [`prefix_cache`]: what a perfect cache that
//!   was cold could have given a round's prompts;
//! - [`telemetry`]: samples streamed with the records and their summaries; [`targets`]:
//!   pass/fail objectives on figures; [`sweep`]: capacity at the objectives of a load
//!   sweep;
//! - [`tokenizer`]: kvbench's documented tokenizer, and Hugging Face's as a counter;
//!   [`prometheus`]: engine metrics as text; [`process`]: `/proc` readings;
//!   [`rng`], [`util`]: a seeded generator, times, slugs, names, untrusted text;
//! - [`auth`]: the bearer token and its sources; [`tls`]: PEM files, certificates and
//!   why a handshake failed, for the agent's server and the coordinator's client.

pub mod agent;
pub mod auth;
pub mod dataset;
pub mod fuzz;
pub mod isolation;
pub mod limits;
pub mod load;
pub mod plan;
pub mod prefix_cache;
pub mod process;
pub mod prometheus;
pub mod record;
pub mod results;
pub mod rng;
pub mod stats;
pub mod sweep;
pub mod targets;
pub mod telemetry;
pub mod tls;
pub mod tokenizer;
pub mod util;
pub mod workload;
pub mod yaml_index;

/// Version of the agent protocol (`proto/kvbench/v1`). Agents and coordinators refuse peers
/// that speak another version. 2: rounds may carry a split share and a start time (an
/// agent of version 1 would ignore them and run the whole request set).
pub const PROTOCOL_VERSION: u32 = 2;
