//! `kvbench`, the coordinator: loads a plan, connects to agents (or starts the embedded
//! default), runs scenarios in order with isolation between them, and writes the results.
//!
//! # Layout
//!
//! One folder per layer; data flows down the list and imports point up it only (a layer
//! never imports one listed after it):
//!
//! - [`agents`]: where agents come from (embedded, remote) and the gRPC client, the only
//!   coordinator file that names generated types;
//! - [`output`]: the result contract, the one writer and reader of result files (names,
//!   scenario files, record spool, run file, saved runs, calibration record);
//! - [`engine`]: the run itself (plan, scenario, isolation, split, events, outcome, inputs,
//!   estimate, workload inspection); prints nothing and writes files only through `output`;
//! - [`present`]: what people read, from the engine's events and outcomes or from
//!   `output`'s saved files (console, JSON Lines, reports, charts, comparisons);
//! - [`cli`]: one file per command; the only place that prints directly and decides exit
//!   codes.
//!
//! `main.rs` parses the command line, sets up tracing and calls [`cli::run()`].

pub mod agents;
pub mod cli;
pub mod engine;
pub mod output;
pub mod present;
