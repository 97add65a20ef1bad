//! `kvbench-agent`: serves the agent protocol next to one serving engine. It generates
//! load locally against that engine, clears its cache on command, and streams one record
//! per request back to the coordinator.
//!
//! The agent owns its engine's address (from its own command line or config): nothing that
//! arrives over gRPC names a URL, a path or a command.
//!
//! # Layout
//!
//! This file is the public API: [`AgentConfig`], [`config`] (the config file: `AgentFile`,
//! `load`), [`serve`], [`spawn`] and [`AgentHandle`] (the embedded mode), [`ServeArgs`] and
//! [`serve_until_signal`] (the binary), and the few engine reads the coordinator shares
//! ([`scrape_metrics`]). Every other module is private:
//!
//! - `grpc`: the adapter over the core that only converts (the one file naming generated
//!   types), and the server;
//! - `core`: rounds registry, drain, stop, restart, cold probe, info (no tonic);
//! - `load`: the load generator: feeder, schedule, runner, request, record, replies, SSE,
//!   prefix tracking;
//! - `engine`: everything said to the engine: the HTTP transport (owned here), clear,
//!   identity and restart checks, notes, token costs, metrics;
//! - `telemetry`: GPU (NVML), host and the agent's own health, sampled during rounds;
//! - `tls`: TLS on the agent's port (certificates re-read when they change), and which
//!   connections reach the service at all;
//! - `ops`: the agent's counters, audit lines and its own metrics endpoint;
//! - `cli`: the binary's command line (the only place that prints);
//! - `tokenizer`: the cache of the tokenizers rounds bring.

mod cli;
pub mod config;
mod core;
mod engine;
mod grpc;
mod load;
mod ops;
mod replay;
mod scheduling;
mod telemetry;
mod tls;
mod tokenizer;

use std::collections::BTreeMap;
use std::time::Duration;

pub use cli::{serve_until_signal, ServeArgs};
pub use engine::http::EngineCallError;
pub use grpc::{serve, spawn, AgentHandle, ServeError};
pub use telemetry::gpu::{FakeGpu, GpuSource, NvmlSource};
pub use telemetry::{GpuChoice, TelemetryConfig};

/// Where the load engine and the samplers send a round's events; the gRPC adapter maps
/// them to the wire.
pub(crate) type EventTx = tokio::sync::mpsc::Sender<kvbench_common::agent::RoundEvent>;

/// Reads the Prometheus families `names` from `url` (an engine's `/metrics`) within
/// `timeout`, each summed over its label sets.
pub async fn scrape_metrics(
    url: &str,
    names: &[&str],
    timeout: Duration,
) -> Result<BTreeMap<String, f64>, EngineCallError> {
    engine::metrics::scrape_names(&engine::http::http_client(), url, names, timeout).await
}

/// What an agent is and where its engine is.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Shown in reports (`agent` in records); defaults to the hostname.
    pub name: String,
    /// The engine's base URL (`http://127.0.0.1:8000`, no `/v1`).
    pub engine_url: String,
    /// The engine's Prometheus endpoint (default `{engine_url}/metrics`).
    pub metrics_url: String,
    /// What must answer 200 once the engine is up (default `{engine_url}/health`).
    pub health_url: String,
    /// The model the engine serves; a restart is done once `/v1/models` lists it.
    pub model: Option<String>,
    /// GPU, host and engine-metrics sampling.
    pub telemetry: TelemetryConfig,
    /// cloud, region, node, engine, model, ...
    pub labels: BTreeMap<String, String>,
    /// What ClearCache does, in order.
    pub clear_steps: Vec<engine::clear::ClearStep>,
    /// How RestartEngine restarts the engine (none: it cannot).
    pub restart: Option<config::Restart>,
    /// What it does when the engine goes down mid-round (`on_engine_failure:`).
    pub on_engine_failure: config::OnEngineFailure,
    /// What kind of engine it is (what its clear and its quirks are).
    pub kind: config::EngineKind,
    /// Its own priority and CPUs, applied when it starts serving.
    pub scheduling: config::Scheduling,
    /// TLS, token, the commands allowed and the limits of this host.
    pub access: config::Access,
    /// Where to serve the agent's own Prometheus metrics (none: not served).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where a round's unacknowledged events go past the memory bound (`state_dir:`).
    pub state_dir: std::path::PathBuf,
}

/// The state directory when the config names none: systemd's `$STATE_DIRECTORY` (the unit's
/// `StateDirectory=`), else `kvbench-agent` in the system's temporary folder.
pub fn default_state_dir() -> std::path::PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("kvbench-agent"))
}

impl AgentConfig {
    /// An agent for a vLLM-compatible engine (kvbench-sim included): clearing calls
    /// vLLM's reset endpoint.
    pub fn vllm(name: impl Into<String>, engine_url: impl Into<String>) -> AgentConfig {
        let engine_url: String = engine_url.into();
        AgentConfig {
            name: name.into(),
            clear_steps: engine::clear::preset("vllm", &engine_url, None)
                .into_iter()
                .collect(),
            restart: None,
            on_engine_failure: config::OnEngineFailure::Report,
            metrics_url: format!("{engine_url}/metrics"),
            health_url: format!("{engine_url}/health"),
            model: None,
            telemetry: TelemetryConfig::default(),
            engine_url,
            labels: BTreeMap::new(),
            kind: config::EngineKind::Vllm,
            scheduling: config::Scheduling::default(),
            access: config::Access::default(),
            metrics_listen: None,
            state_dir: default_state_dir(),
        }
    }
}

impl AgentConfig {
    /// Adds the seed's Mooncake call (`DELETE` on the metadata server) as the last clear
    /// step: the agent makes it, like every clear step.
    pub fn clear_mooncake_metadata(&mut self, metadata_server_url: &str) {
        self.clear_steps
            .push(engine::clear::mooncake_metadata_step(metadata_server_url));
    }

    /// The agent a config file describes; `default_name` when the file names none.
    pub fn from_file(f: config::AgentFile, default_name: impl FnOnce() -> String) -> AgentConfig {
        AgentConfig {
            name: f.name.unwrap_or_else(default_name),
            engine_url: f.engine_url,
            metrics_url: f.metrics_url,
            health_url: f.health_url,
            model: f.model,
            telemetry: f.telemetry,
            labels: f.labels,
            clear_steps: f.clear_steps,
            restart: f.restart,
            on_engine_failure: f.on_engine_failure,
            kind: f.engine_kind,
            scheduling: f.scheduling,
            access: f.access,
            metrics_listen: f.metrics_listen,
            state_dir: f.state_dir.unwrap_or_else(default_state_dir),
        }
    }
}
