//! The validated plan: what a run is made of, every value checked and every default
//! applied.

use super::raw::AgentSpec;
use crate::dataset::DatasetSpec;
use crate::load::{Arrivals, LoadSpec, RampStrategy, Rate};
use crate::stats::StatsOptions;
use crate::util::slug;
use crate::workload::{WorkloadKind, WorkloadSpec};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Which OpenAI-compatible API the load uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiFlavor {
    /// `POST /v1/chat/completions` with `messages`.
    Chat,
    /// `POST /v1/completions` with the chat template rendered into `prompt`.
    Completions,
}

impl ApiFlavor {
    pub fn label(self) -> &'static str {
        match self {
            ApiFlavor::Chat => "chat",
            ApiFlavor::Completions => "completions",
        }
    }
}

/// What isolates one scenario from the one before: every policy then waits
/// `wait_between_scenarios`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationPolicy {
    /// The agent's cache-clearing calls.
    Clear,
    /// The agent restarts the engine (the only true cold start where nothing clears all).
    Restart,
    /// Clear; restart when the clear fails or its cold check shows a cache left behind.
    ClearOrRestart,
    /// Only wait.
    Wait,
    /// Nothing.
    None,
}

impl IsolationPolicy {
    pub fn label(self) -> &'static str {
        match self {
            IsolationPolicy::Clear => "clear",
            IsolationPolicy::Restart => "restart",
            IsolationPolicy::ClearOrRestart => "clear_or_restart",
            IsolationPolicy::Wait => "wait",
            IsolationPolicy::None => "none",
        }
    }
}

/// Where a scenario's load goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// The embedded `kvbench-sim`, started in-process.
    Sim,
    /// An OpenAI-compatible server's base URL (`http://host:port`, no `/v1`).
    Url(String),
    /// `agent`: the engine of the remote agent the scenario runs on (its own config file
    /// names it).
    Agent,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Sim => f.write_str("sim"),
            Endpoint::Url(u) => f.write_str(u),
            Endpoint::Agent => f.write_str("agent"),
        }
    }
}

/// An open loop as the config file gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenLoop {
    pub rate: Rate,
    pub burstiness: f64,
    pub max_concurrency: Option<u32>,
}

/// A validated per-scenario config.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioConfig {
    pub endpoint: Endpoint,
    pub model: String,
    pub api: ApiFlavor,
    pub workload: WorkloadSpec,
    pub ttft_timeout_s: f64,
    pub idle_timeout_s: f64,
    /// `None`: a closed loop of the plan's `concurrency`.
    pub open_loop: Option<OpenLoop>,
    pub duration_s: Option<f64>,
    pub warmup_requests: u32,
    pub warmup_in_round_1: bool,
    /// Ask the engine to produce exactly `max_tokens` (`min_tokens` and `ignore_eos`, which
    /// vLLM and SGLang accept), so that rounds and runs are comparable.
    pub enforce_output_length: bool,
    pub stats: StatsOptions,
    /// Requests from a file instead of the generator (path resolved).
    pub dataset: Option<DatasetSpec>,
    /// A Hugging Face `tokenizer.json` (path resolved): generated lengths are in its tokens.
    pub tokenizer: Option<PathBuf>,
    /// `tokenizer: engine`: generated lengths are in the engine's tokens, measured through
    /// its `/tokenize` before round 1.
    pub engine_tokenizer: bool,
}

impl ScenarioConfig {
    /// Which tokens the scenario's lengths are counted in, as the stats say it.
    pub fn tokenizer_label(&self) -> String {
        match (&self.tokenizer, self.engine_tokenizer) {
            (Some(p), _) => format!("tokenizer.json ({})", p.display()),
            (None, true) => "engine".into(),
            (None, false) => "words (estimate: one token per word)".into(),
        }
    }
}

/// One validated scenario of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    /// File-name form of the name (unique within the plan).
    pub slug: String,
    /// The config file as written in the plan.
    pub config_file: String,
    /// The config file's resolved path.
    pub config_path: PathBuf,
    pub kind: WorkloadKind,
    pub rounds: u32,
    pub concurrency: u32,
    pub config: ScenarioConfig,
    /// The remote agents (of the plan's `agents:`) it runs on: none, the embedded agent of
    /// its endpoint; one; or several at once (`placement: split`).
    pub agents: Vec<String>,
    /// What it must meet: the plan's targets with its own in place of any of the same
    /// figure.
    pub targets: Vec<crate::targets::Target>,
    /// Its own `labels:`; without them, a name of the form
    /// `<platform>-<deployment>-<model>` gives those three. Its agents' labels are added
    /// where the run knows them.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The scenario (by its name as run) it is compared with, as well as with its round 1.
    pub baseline: Option<String>,
    /// One of the runs of a scenario with `repeats:` (named `<name>#<index>`).
    pub repeat: Option<Repeat>,
    /// One point of a scenario with `sweep:` (named `<name>~c16` or `<name>~r4`).
    pub sweep: Option<SweepPoint>,
}

/// The most points a `sweep:` may list.
pub const MAX_SWEEP_POINTS: usize = 64;

/// What a `sweep:` varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepDimension {
    /// The closed loop's concurrency (`~c16`).
    Concurrency,
    /// The open loop's requests per second (`~r4`).
    RequestRate,
}

impl SweepDimension {
    /// The config key, as `sweep:` names it.
    pub fn key(self) -> &'static str {
        match self {
            SweepDimension::Concurrency => "concurrency",
            SweepDimension::RequestRate => "request_rate",
        }
    }

    /// What a point's name adds: `~c16`, `~r0.5`.
    pub fn suffix(self, value: f64) -> String {
        let v = crate::util::trim_float(value);
        match self {
            SweepDimension::Concurrency => format!("~c{v}"),
            SweepDimension::RequestRate => format!("~r{v}"),
        }
    }

    /// How a load on this axis reads: `16 concurrent`, `4 req/s`.
    pub fn unit(self) -> &'static str {
        match self {
            SweepDimension::Concurrency => "concurrent requests",
            SweepDimension::RequestRate => "requests/s",
        }
    }
}

/// Which point of a swept scenario this is: the scenario runs its rounds at each load of
/// its `sweep:`, each point after its own isolation, as a scenario of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The swept scenario's name, without the point's `~c16` (and any `#<repeat>`): what
    /// capacity is computed over.
    pub scenario: String,
    pub dimension: SweepDimension,
    /// The load of this point: a concurrency, or requests per second.
    pub value: f64,
    /// 1-based, in the order of increasing load.
    pub index: u32,
    pub of: u32,
    /// The scenario's service-level objectives (`slo:`): the largest load that meets all of
    /// them in a round is its capacity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slo: Vec<crate::targets::Target>,
    /// The swept scenario its capacity is compared with (its `baseline:`, as swept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// A point of a `search:`: its load is chosen while the run goes, from the points
    /// before it (see [`crate::sweep::next_search_load`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchSpec>,
}

/// A `search:`: the capacity's boundary found by bisection on the warm round, between two
/// loads, in at most `points` points (`<name>~s1`, `~s2`, ...): the lowest load first, then
/// the highest, then the geometric middle of the bracket between the highest load that met
/// every objective and the lowest that did not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSpec {
    /// The lowest and the highest load it may try.
    pub between: [f64; 2],
    /// The most points it runs.
    pub points: u32,
    /// This point's load was chosen (it ran); a point never chosen was not needed.
    #[serde(default)]
    pub chosen: bool,
}

/// The most points a `search:` may take, and what it takes unless told.
pub const MAX_SEARCH_POINTS: u32 = 16;
pub const DEFAULT_SEARCH_POINTS: u32 = 8;

impl SearchSpec {
    /// The resolution stated before the search runs: after its two ends, each point halves
    /// the bracket on a log scale, so the boundary is known within this factor (`1.1`:
    /// within 10 %); a concurrency search stops at a bracket of one.
    pub fn resolution_factor(&self) -> f64 {
        let [lo, hi] = self.between;
        let halvings = self.points.saturating_sub(2) as i32;
        (hi / lo).powf(0.5f64.powi(halvings))
    }

    /// The resolution in words: `within 10.2 % give or take 1 concurrent request` (a
    /// concurrency is a whole number: each middle is rounded, which may widen the bracket
    /// by up to a request at either end).
    pub fn resolution_text(&self, dimension: SweepDimension) -> String {
        let pct = (self.resolution_factor() - 1.0) * 100.0;
        match dimension {
            SweepDimension::Concurrency => {
                format!("within {pct:.1} % give or take 1 concurrent request")
            }
            SweepDimension::RequestRate => format!("within {pct:.1} %"),
        }
    }
}

impl Scenario {
    /// This point of a `search:` at load `value`, chosen.
    pub fn at_search_load(&self, value: f64) -> Scenario {
        let mut s = self.clone();
        if let Some(p) = s.sweep.as_mut() {
            p.value = value;
            if let Some(spec) = p.search.as_mut() {
                spec.chosen = true;
            }
            let dimension = p.dimension;
            at_load(&mut s, dimension, value);
        }
        s
    }
}

/// Sets a scenario's load on the swept axis.
fn at_load(point: &mut Scenario, dimension: SweepDimension, value: f64) {
    match dimension {
        SweepDimension::Concurrency => point.concurrency = value as u32,
        SweepDimension::RequestRate => {
            let open = point.config.open_loop.get_or_insert(OpenLoop {
                rate: Rate::Fixed(value),
                burstiness: 1.0,
                max_concurrency: None,
            });
            open.rate = Rate::Fixed(value);
        }
    }
}

/// A scenario with `search:` as its points' slots, `<name>~s1` ... `<name>~sN`: the first
/// at the lowest load, the second at the highest, the others at a load chosen while the
/// run goes (until then they hold the lowest, so that the plan's checks see real loads).
pub(crate) fn searched(
    s: Scenario,
    dimension: SweepDimension,
    spec: &SearchSpec,
    slo: &[crate::targets::Target],
) -> Vec<Scenario> {
    (1..=spec.points)
        .map(|k| {
            let name = format!("{}~s{k}", s.name);
            let value = if k == 2 {
                spec.between[1]
            } else {
                spec.between[0]
            };
            let mut point = Scenario {
                slug: slug(&name),
                sweep: Some(SweepPoint {
                    scenario: s.name.clone(),
                    dimension,
                    value,
                    index: k,
                    of: spec.points,
                    slo: slo.to_vec(),
                    baseline: None,
                    search: Some(spec.clone()),
                }),
                name,
                ..s.clone()
            };
            at_load(&mut point, dimension, value);
            point
        })
        .collect()
}

/// A scenario at each load of its sweep (`<name>~c16`, in increasing load); the scenario
/// itself when it sweeps nothing. Each point is a scenario of the run: it runs after its
/// own isolation and has its own files.
pub(crate) fn swept(
    s: Scenario,
    sweep: Option<&(SweepDimension, Vec<f64>)>,
    slo: &[crate::targets::Target],
) -> Vec<Scenario> {
    let Some((dimension, loads)) = sweep else {
        return vec![s];
    };
    let of = loads.len() as u32;
    loads
        .iter()
        .enumerate()
        .map(|(k, &value)| {
            let name = format!("{}{}", s.name, dimension.suffix(value));
            let mut point = Scenario {
                slug: slug(&name),
                sweep: Some(SweepPoint {
                    scenario: s.name.clone(),
                    dimension: *dimension,
                    value,
                    index: k as u32 + 1,
                    of,
                    slo: slo.to_vec(),
                    baseline: None,
                    search: None,
                }),
                name,
                ..s.clone()
            };
            at_load(&mut point, *dimension, value);
            point
        })
        .collect()
}

/// The most repeats a scenario may ask for.
pub const MAX_REPEATS: u32 = 100;

/// Which run of a repeated scenario this is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repeat {
    /// 1-based.
    pub index: u32,
    pub of: u32,
    /// The scenario's name without `#<index>`: what the report and `compare` group by.
    pub scenario: String,
}

/// A scenario as many times as it repeats: `<name>#1` ... `<name>#N`, each a scenario of
/// the run (so each runs after its isolation, with its own files); once when it does not.
pub(crate) fn repeated(s: Scenario, n: u32) -> Vec<Scenario> {
    if n <= 1 {
        return vec![s];
    }
    (1..=n)
        .map(|k| {
            let name = format!("{}#{k}", s.name);
            Scenario {
                slug: slug(&name),
                repeat: Some(Repeat {
                    index: k,
                    of: n,
                    scenario: s.name.clone(),
                }),
                name,
                ..s.clone()
            }
        })
        .collect()
}

/// The labels a scenario name of the seed's form `<platform>-<deployment>-<model>` stands
/// for (`腾讯云-单机多卡-Qwen2.5-72B`: the model keeps its own dashes); none for a name
/// of fewer than three parts.
pub fn labels_from_name(name: &str) -> std::collections::BTreeMap<String, String> {
    let mut parts = name.splitn(3, '-').map(str::trim);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(p), Some(d), Some(m)) if !p.is_empty() && !d.is_empty() && !m.is_empty() => {
            [("platform", p), ("deployment", d), ("model", m)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        }
        _ => std::collections::BTreeMap::new(),
    }
}

impl Scenario {
    /// Runs on remote agents of the plan's `agents:` section.
    pub fn is_remote(&self) -> bool {
        !self.agents.is_empty()
    }

    /// Runs across several agents at once (`placement: split`).
    pub fn is_split(&self) -> bool {
        self.agents.len() > 1
    }

    /// What breaks the limits of [`crate::limits`] in this scenario's workload and in the
    /// load of any of its rounds (each problem once).
    pub fn load_limits(&self) -> Vec<crate::limits::LimitError> {
        let mut errors = self.config.workload.validate().err().unwrap_or_default();
        for round in 1..=self.rounds.min(2) {
            for e in self.load_spec(round).validate().err().unwrap_or_default() {
                if !errors.contains(&e) {
                    errors.push(e);
                }
            }
        }
        errors
    }

    /// The load of round `round` (warmups only in round 1 when the config asks).
    pub fn load_spec(&self, round: u32) -> LoadSpec {
        let c = &self.config;
        LoadSpec {
            arrivals: match c.open_loop {
                Some(o) => Arrivals::Open {
                    rate: o.rate,
                    burstiness: o.burstiness,
                    max_concurrency: o.max_concurrency,
                },
                None => Arrivals::Closed {
                    concurrency: self.concurrency,
                },
            },
            duration_s: c.duration_s,
            warmup_requests: if round > 1 || c.warmup_in_round_1 {
                c.warmup_requests
            } else {
                0
            },
            ttft_timeout_s: c.ttft_timeout_s,
            idle_timeout_s: c.idle_timeout_s,
        }
    }

    /// A short description of the load shape, for people.
    pub fn load_description(&self) -> String {
        let c = &self.config;
        let replay = c
            .dataset
            .as_ref()
            .filter(|d| d.format == crate::dataset::DatasetFormat::Mooncake && d.use_timestamps);
        let mut s = match (replay, c.open_loop) {
            (Some(d), o) => {
                let mut s = format!(
                    "trace replay at the trace's timestamps (relative to its first, speedup {})",
                    d.speedup
                );
                if let Some(m) = o.and_then(|o| o.max_concurrency) {
                    s.push_str(&format!(", at most {m} in flight"));
                }
                s
            }
            (None, None) => format!("closed loop, concurrency {}", self.concurrency),
            (None, Some(o)) => {
                let rate = match o.rate {
                    Rate::Fixed(r) if r.is_infinite() => "all at once".to_owned(),
                    Rate::Fixed(r) => format!("{r} req/s"),
                    Rate::Ramp {
                        strategy,
                        start,
                        end,
                    } => format!(
                        "{} ramp {start} -> {end} req/s",
                        match strategy {
                            RampStrategy::Linear => "linear",
                            RampStrategy::Exponential => "exponential",
                        }
                    ),
                };
                let mut s = format!("open loop, {rate}, burstiness {}", o.burstiness);
                if let Some(m) = o.max_concurrency {
                    s.push_str(&format!(", at most {m} in flight"));
                }
                s
            }
        };
        match c.duration_s {
            Some(d) => s.push_str(&format!(", for {d} s")),
            None => s.push_str(&format!(", {} requests", c.workload.num_requests)),
        }
        if c.warmup_requests > 0 {
            s.push_str(&format!(
                ", {} warmup requests{}",
                c.warmup_requests,
                if c.warmup_in_round_1 {
                    ""
                } else {
                    " (not in round 1)"
                }
            ));
        }
        s
    }
}

/// A validated plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub path: PathBuf,
    pub output_dir: PathBuf,
    pub clear_cache_between_scenarios: bool,
    /// What runs between scenarios (`isolation:`, else from the seed's
    /// `clear_cache_between_scenarios`: true = clear, false = wait).
    pub isolation: IsolationPolicy,
    /// Isolate before the first scenario too.
    pub isolate_before_first: bool,
    pub wait_between_scenarios_s: f64,
    pub mooncake_metadata_server_url: Option<String>,
    /// An agent config file for the embedded agent of the scenarios whose endpoint is its
    /// `engine.base_url` (its cache-clearing calls, restart command, telemetry settings).
    pub agent_config: Option<PathBuf>,
    /// Above this share of failed requests (in any round) a scenario is `degraded`.
    pub max_error_rate: f64,
    /// How long an agent keeps a round's unacknowledged records after it last heard from
    /// this coordinator (`reconnect_window_s`, default 60).
    pub reconnect_window: std::time::Duration,
    /// Remote agents (`agents:`); empty: every scenario runs on an embedded agent.
    pub agents: Vec<AgentSpec>,
    /// The plan-wide `targets:` (each scenario's own are in [`Scenario::targets`]).
    pub targets: Vec<crate::targets::Target>,
    pub scenarios: Vec<Scenario>,
}

impl Plan {
    /// The plan's remote agent of that name.
    pub fn agent(&self, name: &str) -> Option<&AgentSpec> {
        self.agents.iter().find(|a| a.name == name)
    }
}

pub const DEFAULT_OUTPUT_DIR: &str = "test_results_multi";
pub const DEFAULT_WAIT_S: f64 = 10.0;
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.05;
pub const DEFAULT_ROUNDS: u32 = 2;
pub const DEFAULT_SEED: u64 = 42;
pub const DEFAULT_MODEL: &str = "kvbench-sim";
pub const DEFAULT_TTFT_TIMEOUT_S: f64 = 300.0;
pub const DEFAULT_IDLE_TIMEOUT_S: f64 = 60.0;
