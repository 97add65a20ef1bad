//! The plan and config files as written: serde structs with `deny_unknown_fields`, read
//! before anything is checked.

use super::model::{ApiFlavor, IsolationPolicy};
use crate::dataset::DatasetSpec;
use crate::load::RampStrategy;
use crate::stats::Goodput;
use crate::workload::{WorkloadKind, WorkloadParams};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The plan file, as written (the seed's `multi_scenario_config.yaml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlan {
    #[serde(default)]
    pub(crate) output_dir: Option<String>,
    #[serde(default)]
    pub(crate) clear_cache_between_scenarios: Option<bool>,
    #[serde(default)]
    pub(crate) isolation: Option<IsolationPolicy>,
    #[serde(default)]
    pub(crate) isolate_before_first: Option<bool>,
    #[serde(default)]
    pub(crate) wait_between_scenarios: Option<f64>,
    #[serde(default)]
    pub(crate) mooncake: Option<RawMooncake>,
    #[serde(default)]
    pub(crate) agent_config: Option<String>,
    #[serde(default)]
    pub(crate) max_error_rate: Option<f64>,
    #[serde(default)]
    pub(crate) reconnect_window_s: Option<f64>,
    /// Agents running as services next to their engines, reached over the network.
    #[serde(default)]
    pub(crate) agents: Option<Vec<RawAgent>>,
    /// Targets every scenario must meet (`figure: "op value"`).
    #[serde(default)]
    pub(crate) targets: Option<RawTargets>,
    /// TLS for every `https://` agent that gives none of its own.
    #[serde(default)]
    pub(crate) tls: Option<RawClientTls>,
    /// The bearer token for every agent that names none of its own.
    #[serde(default)]
    pub(crate) token_file: Option<String>,
    #[serde(default)]
    pub(crate) token_env: Option<String>,
    pub(crate) test_scenarios: Vec<RawScenario>,
}

/// `tls:` of the plan or of one agent: how the coordinator checks the agent and shows
/// itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClientTls {
    pub(crate) ca_file: String,
    #[serde(default)]
    pub(crate) cert_file: Option<String>,
    #[serde(default)]
    pub(crate) key_file: Option<String>,
    #[serde(default)]
    pub(crate) server_name: Option<String>,
}

pub(crate) type RawTargets = std::collections::BTreeMap<String, serde_yaml::Value>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    pub(crate) name: String,
    pub(crate) address: String,
    #[serde(default)]
    pub(crate) labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) tls: Option<RawClientTls>,
    #[serde(default)]
    pub(crate) token_file: Option<String>,
    #[serde(default)]
    pub(crate) token_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMooncake {
    #[serde(default)]
    pub(crate) metadata_server_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScenario {
    pub(crate) name: String,
    pub(crate) config_file: String,
    pub(crate) scenario: WorkloadKind,
    #[serde(default)]
    pub(crate) rounds: Option<u32>,
    #[serde(default)]
    pub(crate) concurrency: Option<u32>,
    /// Run on this agent of the plan's `agents:`.
    #[serde(default)]
    pub(crate) agent: Option<String>,
    /// Run on these agents.
    #[serde(default)]
    pub(crate) agents: Option<Vec<String>>,
    /// Run on the agents whose labels have all these values.
    #[serde(default)]
    pub(crate) selector: Option<std::collections::BTreeMap<String, String>>,
    /// How a scenario on several agents runs.
    #[serde(default)]
    pub(crate) placement: Option<Placement>,
    /// Targets of this scenario (in place of the plan's of the same figure).
    #[serde(default)]
    pub(crate) targets: Option<RawTargets>,
    /// What sets it apart (`cloud: a`, `model: qwen`), for the report's pivots.
    #[serde(default)]
    pub(crate) labels: Option<std::collections::BTreeMap<String, String>>,
    /// The scenario it is compared with besides its own round 1 (`without-cache`).
    #[serde(default)]
    pub(crate) baseline: Option<String>,
    /// Run its rounds this many times, each after its isolation (default 1).
    #[serde(default)]
    pub(crate) repeats: Option<u32>,
    /// Run its rounds at each of these loads, each point after its isolation.
    #[serde(default)]
    pub(crate) sweep: Option<RawSweep>,
    /// Service-level objectives (`p95_ttft_ms: "<= 2000"`): a swept scenario's capacity is
    /// the largest load that meets them all.
    #[serde(default)]
    pub(crate) slo: Option<RawTargets>,
    /// Find the capacity by bisection instead of a list of loads.
    #[serde(default)]
    pub(crate) search: Option<RawSearch>,
}

/// `search:` as written: the objectives, the loads to search between, what is varied and
/// how many points it may take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSearch {
    #[serde(default)]
    pub(crate) slo: Option<RawTargets>,
    #[serde(default)]
    pub(crate) between: Option<Vec<f64>>,
    #[serde(default)]
    pub(crate) over: Option<crate::plan::SweepDimension>,
    #[serde(default)]
    pub(crate) points: Option<u32>,
}

/// `sweep:` as written: one of its keys, with the loads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSweep {
    #[serde(default)]
    pub(crate) concurrency: Option<Vec<u32>>,
    #[serde(default)]
    pub(crate) request_rate: Option<Vec<f64>>,
}

/// How a scenario placed on several agents runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Once per agent, as separate scenarios named `<name>@<agent>`.
    Each,
    /// One scenario across the agents at once: each runs a disjoint share of the request
    /// set with its share of the load, all from one start time.
    Split,
}

/// An agent of the plan's `agents:` section: a `kvbench-agent` service next to its engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    pub name: String,
    /// `http://host:port`, or `https://host:port` with `tls`.
    pub address: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// How to reach it over TLS (an `https://` address).
    pub tls: Option<ClientTls>,
    /// Where its bearer token is (the token itself is read when connecting, and never kept
    /// in the plan).
    pub token: Option<crate::auth::TokenSource>,
}

/// The coordinator's TLS files for one agent, paths resolved against the plan's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA that signed the agent's certificate.
    pub ca_file: std::path::PathBuf,
    /// The coordinator's client certificate and key (mutual TLS).
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    /// The name the agent's certificate must carry (default: the agent's name).
    pub server_name: String,
}

/// A per-scenario config file (`test_config_*.yaml`), as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(alias = "api_url", alias = "base_url")]
    pub(crate) endpoint: String,
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) api: Option<ApiFlavor>,
    #[serde(default)]
    pub(crate) num_requests: Option<u32>,
    #[serde(default)]
    pub(crate) output_tokens: Option<serde_yaml::Value>,
    #[serde(default)]
    pub(crate) enforce_output_length: Option<bool>,
    #[serde(default)]
    pub(crate) seed: Option<u64>,
    #[serde(default)]
    pub(crate) ttft_timeout_s: Option<f64>,
    #[serde(default)]
    pub(crate) idle_timeout_s: Option<f64>,
    #[serde(default)]
    pub(crate) workload: Option<WorkloadParams>,
    #[serde(default)]
    pub(crate) request_rate: Option<serde_yaml::Value>,
    #[serde(default)]
    pub(crate) burstiness: Option<f64>,
    #[serde(default)]
    pub(crate) max_concurrency: Option<u32>,
    #[serde(default)]
    pub(crate) ramp_up: Option<RawRamp>,
    #[serde(default)]
    pub(crate) duration_s: Option<f64>,
    #[serde(default)]
    pub(crate) warmup_requests: Option<u32>,
    #[serde(default)]
    pub(crate) warmup_in_round_1: Option<bool>,
    #[serde(default)]
    pub(crate) percentiles: Option<Vec<f64>>,
    #[serde(default)]
    pub(crate) goodput: Option<Goodput>,
    #[serde(default)]
    pub(crate) dataset: Option<DatasetSpec>,
    #[serde(default)]
    pub(crate) tokenizer: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRamp {
    pub(crate) strategy: RampStrategy,
    pub(crate) start_rate: f64,
    pub(crate) end_rate: f64,
}
