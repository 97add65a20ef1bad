//! The plan (`multi_scenario_config.yaml`, the seed's format) and the per-scenario config
//! files it names, loaded as raw serde structs with `deny_unknown_fields` and then
//! validated. Every error names the file, the line and the key, and says what is valid.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::DatasetSpec;
use crate::load::{Arrivals, LoadSpec, RampStrategy, Rate};
use crate::stats::{Goodput, StatsOptions, DEFAULT_PERCENTILES};
use crate::util::slug;
use crate::workload::{OutputDist, WorkloadKind, WorkloadParams, WorkloadSpec, MAX_OUTPUT_TOKENS};
use crate::yaml_index::YamlIndex;

// ---------------------------------------------------------------------------------------
// Raw files, as written.

/// The plan file, as written (the seed's `multi_scenario_config.yaml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    #[serde(default)]
    output_dir: Option<String>,
    #[serde(default)]
    clear_cache_between_scenarios: Option<bool>,
    #[serde(default)]
    isolation: Option<IsolationPolicy>,
    #[serde(default)]
    isolate_before_first: Option<bool>,
    #[serde(default)]
    wait_between_scenarios: Option<f64>,
    #[serde(default)]
    mooncake: Option<RawMooncake>,
    #[serde(default)]
    agent_config: Option<String>,
    #[serde(default)]
    max_error_rate: Option<f64>,
    /// Agents running as services next to their engines, reached over the network.
    #[serde(default)]
    agents: Option<Vec<RawAgent>>,
    /// Targets every scenario must meet (`figure: "op value"`).
    #[serde(default)]
    targets: Option<RawTargets>,
    test_scenarios: Vec<RawScenario>,
}

type RawTargets = std::collections::BTreeMap<String, serde_yaml::Value>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: String,
    address: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMooncake {
    #[serde(default)]
    metadata_server_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    config_file: String,
    scenario: WorkloadKind,
    #[serde(default)]
    rounds: Option<u32>,
    #[serde(default)]
    concurrency: Option<u32>,
    /// Run on this agent of the plan's `agents:`.
    #[serde(default)]
    agent: Option<String>,
    /// Run on these agents.
    #[serde(default)]
    agents: Option<Vec<String>>,
    /// Run on the agents whose labels have all these values.
    #[serde(default)]
    selector: Option<std::collections::BTreeMap<String, String>>,
    /// How a scenario on several agents runs.
    #[serde(default)]
    placement: Option<Placement>,
    /// Targets of this scenario (in place of the plan's of the same figure).
    #[serde(default)]
    targets: Option<RawTargets>,
    /// What sets it apart (`cloud: a`, `model: qwen`), for the report's pivots.
    #[serde(default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
    /// The scenario it is compared with besides its own round 1 (`without-cache`).
    #[serde(default)]
    baseline: Option<String>,
    /// Run its rounds this many times, each after its isolation (default 1).
    #[serde(default)]
    repeats: Option<u32>,
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
    /// `http://host:port`.
    pub address: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A per-scenario config file (`test_config_*.yaml`), as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(alias = "api_url", alias = "base_url")]
    endpoint: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    api: Option<ApiFlavor>,
    #[serde(default)]
    num_requests: Option<u32>,
    #[serde(default)]
    output_tokens: Option<serde_yaml::Value>,
    #[serde(default)]
    enforce_output_length: Option<bool>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    ttft_timeout_s: Option<f64>,
    #[serde(default)]
    idle_timeout_s: Option<f64>,
    #[serde(default)]
    workload: Option<WorkloadParams>,
    #[serde(default)]
    request_rate: Option<serde_yaml::Value>,
    #[serde(default)]
    burstiness: Option<f64>,
    #[serde(default)]
    max_concurrency: Option<u32>,
    #[serde(default)]
    ramp_up: Option<RawRamp>,
    #[serde(default)]
    duration_s: Option<f64>,
    #[serde(default)]
    warmup_requests: Option<u32>,
    #[serde(default)]
    warmup_in_round_1: Option<bool>,
    #[serde(default)]
    percentiles: Option<Vec<f64>>,
    #[serde(default)]
    goodput: Option<Goodput>,
    #[serde(default)]
    dataset: Option<DatasetSpec>,
    #[serde(default)]
    tokenizer: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRamp {
    strategy: RampStrategy,
    start_rate: f64,
    end_rate: f64,
}

// ---------------------------------------------------------------------------------------
// Validated types.

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
fn repeated(s: Scenario, n: u32) -> Vec<Scenario> {
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

// ---------------------------------------------------------------------------------------
// Errors.

/// One problem in a plan or config file.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Dotted path of the key (`test_scenarios[1].rounds`); empty for the whole file.
    pub key: String,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a plan (at least one).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct PlanErrors(pub Vec<PlanError>);

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<PlanError> for PlanErrors {
    fn from(e: PlanError) -> Self {
        PlanErrors(vec![e])
    }
}

/// Turns a serde_yaml error into one that names the key and says what is valid.
/// A serde_yaml error as a [`PlanError`] naming the file, the line and the key (any YAML file
/// kvbench reads: plans, scenario configs, agent configs).
pub fn yaml_error(file: &Path, text: &str, e: &serde_yaml::Error) -> PlanError {
    let mut msg = e.to_string();
    let line = e.location().map(|l| l.line());
    if let Some(pos) = msg.rfind(" at line ") {
        msg.truncate(pos);
    }
    // serde_yaml writes "path.to.key: message" when the error is below the top level.
    let (mut key, mut message) = match msg.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (path.to_owned(), rest.to_owned()),
        _ => (String::new(), msg.clone()),
    };
    if let Some(field) = between(&message, "unknown field `", "`") {
        key = join_key(&key, field);
        message = message.replacen("expected one of", "valid keys here are", 1);
        message = message.replacen(", expected ", ", valid keys here are ", 1);
    } else if let Some(field) = between(&message, "missing field `", "`") {
        key = join_key(&key, field);
        message = format!("missing required key `{field}`");
    } else if message.starts_with("unknown variant") {
        message = message.replacen("expected one of", "valid values are", 1);
        message = message.replacen(", expected ", ", valid values are ", 1);
    }
    if key.is_empty() && text.trim().is_empty() {
        message = "the file is empty".into();
    }
    // Not a mapping at the top (a list, a bare value): say what the file must hold, not
    // the name of a Rust type.
    for (raw, what) in [
        (
            "struct RawPlan",
            "a plan: keys such as output_dir and test_scenarios, one per line",
        ),
        (
            "struct RawConfig",
            "a scenario config: keys such as endpoint and num_requests, one per line",
        ),
    ] {
        if let Some(pos) = message.find(raw) {
            message = format!("{}{what}", &message[..pos]);
        }
    }
    PlanError {
        file: file.to_owned(),
        line,
        key,
        message,
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &s[s.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

fn join_key(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

/// The line of `key` (a path such as `workload.document_tokens`, or its nearest ancestor)
/// in the YAML file at `path`, from the parser's positions; `None` when the file cannot be
/// read or lacks it.
pub fn line_of(path: &Path, key: &str) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    YamlIndex::of(&text).line(key)
}

// ---------------------------------------------------------------------------------------
// Loading.

/// Reads a YAML file into a raw type: the positions of its keys and its value, or an
/// error naming the file, the line and the key. Every YAML file kvbench reads comes in here.
pub fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(YamlIndex, T), PlanError> {
    let text = std::fs::read_to_string(path).map_err(|e| PlanError {
        file: path.to_owned(),
        line: None,
        key: String::new(),
        message: format!("cannot read the file: {e}"),
    })?;
    let value = serde_yaml::from_str(&text).map_err(|e| yaml_error(path, &text, &e))?;
    Ok((YamlIndex::of(&text), value))
}

/// A limit error of a scenario config file, at the line of its key.
fn config_error(path: &Path, e: &crate::limits::LimitError) -> PlanError {
    PlanError {
        file: path.to_owned(),
        line: line_of(path, &e.field),
        key: e.field.clone(),
        message: e.message.clone(),
    }
}

/// Loads and validates a plan and every config file it names. Relative paths in the plan
/// resolve against the plan file's folder.
pub fn load(path: &Path) -> Result<Plan, PlanErrors> {
    let (index, raw): (YamlIndex, RawPlan) = read_yaml(path)?;
    let mut c = PlanCheck {
        path,
        base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        index: &index,
        errors: Vec::new(),
    };
    let wait = c.wait(raw.wait_between_scenarios);
    let max_error_rate = c.max_error_rate(raw.max_error_rate);
    if raw.test_scenarios.is_empty() {
        c.err("test_scenarios", "must list at least one scenario".into());
    }
    let output_dir = resolve(
        &c.base,
        raw.output_dir.as_deref().unwrap_or(DEFAULT_OUTPUT_DIR),
    );
    let mooncake_metadata_server_url = raw.mooncake.and_then(|m| m.metadata_server_url);
    if let Some(url) = &mooncake_metadata_server_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            c.err(
                "mooncake.metadata_server_url",
                format!("must be an http:// or https:// URL, got {url:?}"),
            );
        }
    }
    let agent_config = c.agent_config(raw.agent_config.as_deref());

    let agents = c.agents(raw.agents.unwrap_or_default());
    let targets = c.targets("targets", raw.targets.unwrap_or_default());
    let mut scenarios = Vec::new();
    let mut slugs = BTreeSet::new();
    // (index in `scenarios`, index in the plan's test_scenarios)
    let mut bases: Vec<(usize, usize)> = Vec::new();
    for (i, mut s) in raw.test_scenarios.into_iter().enumerate() {
        let placed = c.placement(i, &s, &agents);
        let own = c.targets(
            &format!("test_scenarios[{i}].targets"),
            s.targets.take().unwrap_or_default(),
        );
        let repeats = c.repeats(i, s.repeats);
        let Some(mut scenario) = c.scenario(i, s) else {
            continue;
        };
        scenario.targets = crate::targets::merged(&targets, &own);
        let first = scenarios.len();
        let placed_runs = c.expand(i, scenario, placed);
        for sc in placed_runs.into_iter().flat_map(|sc| repeated(sc, repeats)) {
            if !sc.name.is_empty() && !slugs.insert(sc.slug.clone()) {
                c.err(
                    &format!("test_scenarios[{i}].name"),
                    format!("{:?} gives the same file names as an earlier scenario ({}); give each scenario a distinct name", sc.name, sc.slug),
                );
            }
            scenarios.push(sc);
        }
        bases.extend((first..scenarios.len()).map(|j| (j, i)));
    }
    c.baselines(&mut scenarios, &bases);
    if !c.errors.is_empty() {
        return Err(PlanErrors(c.errors));
    }
    Ok(Plan {
        path: path.to_owned(),
        output_dir,
        clear_cache_between_scenarios: raw.clear_cache_between_scenarios.unwrap_or(true),
        isolation: raw
            .isolation
            .unwrap_or(match raw.clear_cache_between_scenarios {
                Some(false) => IsolationPolicy::Wait,
                _ => IsolationPolicy::Clear,
            }),
        isolate_before_first: raw.isolate_before_first.unwrap_or(false),
        wait_between_scenarios_s: wait,
        mooncake_metadata_server_url,
        agent_config,
        max_error_rate,
        agents,
        targets,
        scenarios,
    })
}

/// The checks of a plan file, each error collected with the file, the line of its key and
/// what would be valid.
struct PlanCheck<'a> {
    path: &'a Path,
    /// The plan's folder: relative paths resolve against it.
    base: PathBuf,
    index: &'a YamlIndex,
    errors: Vec<PlanError>,
}

impl PlanCheck<'_> {
    /// An error at the line of `key` (a path such as `test_scenarios[2].rounds`).
    fn err(&mut self, key: &str, message: String) {
        self.errors.push(PlanError {
            file: self.path.to_owned(),
            line: self.index.line(key),
            key: key.to_owned(),
            message,
        });
    }

    /// The targets under `key`, each `figure: "op value"`.
    fn targets(&mut self, key: &str, raw: RawTargets) -> Vec<crate::targets::Target> {
        let mut out = Vec::new();
        for (metric, v) in raw {
            let at = format!("{key}.{metric}");
            let condition = match v {
                serde_yaml::Value::String(s) => s,
                other => {
                    let shown = serde_yaml::to_string(&other).unwrap_or_default();
                    self.err(
                        &at,
                        format!(
                            "must be a condition with its operator, as \">= 50\" or \"<= {}\" (quoted), got {}",
                            shown.trim(),
                            shown.trim()
                        ),
                    );
                    continue;
                }
            };
            match crate::targets::Target::parse(&metric, &condition) {
                Ok(t) => out.push(t),
                Err(e) => self.err(&at, e),
            }
        }
        out
    }

    fn wait(&mut self, raw: Option<f64>) -> f64 {
        let wait = raw.unwrap_or(DEFAULT_WAIT_S);
        if !(wait.is_finite() && wait >= 0.0) {
            self.err(
                "wait_between_scenarios",
                format!("must be a number of seconds >= 0, got {wait}"),
            );
        }
        wait
    }

    fn max_error_rate(&mut self, raw: Option<f64>) -> f64 {
        let rate = raw.unwrap_or(DEFAULT_MAX_ERROR_RATE);
        if !(0.0..=1.0).contains(&rate) {
            self.err(
                "max_error_rate",
                format!("must be a share of requests between 0 and 1 (0.05 = 5 %), got {rate}"),
            );
        }
        rate
    }

    fn agent_config(&mut self, raw: Option<&str>) -> Option<PathBuf> {
        let p = resolve(&self.base, raw?);
        if !p.is_file() {
            self.err(
                "agent_config",
                format!(
                    "no such file: {} (an agent config file, as in deploy/agent/; relative to the plan's folder)",
                    p.display()
                ),
            );
        }
        Some(p)
    }

    /// Scenario `i` with its config file loaded and checked; `None` when it has errors
    /// that leave nothing to build.
    /// The plan's `agents:`: unique names, `http://host:port` addresses.
    fn agents(&mut self, raw: Vec<RawAgent>) -> Vec<AgentSpec> {
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        for (i, a) in raw.into_iter().enumerate() {
            let key = |k: &str| format!("agents[{i}].{k}");
            let name = a.name.trim().to_owned();
            if name.is_empty() || name.contains(['@', ',']) {
                self.err(
                    &key("name"),
                    format!("must be a non-empty name without `@` or `,`, got {name:?}"),
                );
            } else if !names.insert(name.clone()) {
                self.err(
                    &key("name"),
                    format!("{name:?} names an earlier agent too: give each agent a distinct name"),
                );
            }
            let address = a.address.trim().trim_end_matches('/').to_owned();
            let ok = address
                .strip_prefix("http://")
                .and_then(|hp| hp.rsplit_once(':'))
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                self.err(
                    &key("address"),
                    format!("must be the agent's gRPC address, http://HOST:PORT (as kvbench-agent --listen), got {address:?}"),
                );
            }
            out.push(AgentSpec {
                name,
                address,
                labels: a.labels,
            });
        }
        out
    }

    /// The remote agents a scenario names (`agent:`, `agents:` or `selector:`), with how
    /// it runs on several; `None`: the embedded agent of its endpoint.
    fn placement(
        &mut self,
        i: usize,
        s: &RawScenario,
        agents: &[AgentSpec],
    ) -> Option<(Vec<String>, Placement)> {
        let key = |k: &str| format!("test_scenarios[{i}].{k}");
        let given = usize::from(s.agent.is_some())
            + usize::from(s.agents.is_some())
            + usize::from(s.selector.is_some());
        if given == 0 {
            if s.placement.is_some() {
                self.err(
                    &key("placement"),
                    "places a scenario on several agents: name them with `agents:` or `selector:`"
                        .into(),
                );
            }
            return None;
        }
        let which = if s.agent.is_some() {
            "agent"
        } else if s.agents.is_some() {
            "agents"
        } else {
            "selector"
        };
        if given > 1 {
            self.err(
                &key(which),
                "give one of `agent`, `agents` and `selector`".into(),
            );
            return None;
        }
        if agents.is_empty() {
            self.err(
                &key(which),
                "names remote agents, but the plan has no `agents:` section (name, address and labels of each kvbench-agent)".into(),
            );
            return None;
        }
        let known: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
        let names: Vec<String> = match (&s.agent, &s.agents, &s.selector) {
            (Some(a), _, _) => vec![a.clone()],
            (_, Some(list), _) => list.clone(),
            (_, _, Some(sel)) => {
                let found: Vec<String> = agents
                    .iter()
                    .filter(|a| sel.iter().all(|(k, v)| a.labels.get(k) == Some(v)))
                    .map(|a| a.name.clone())
                    .collect();
                if found.is_empty() {
                    self.err(
                        &key("selector"),
                        format!(
                            "no agent has all of these labels; the agents are: {}",
                            agents
                                .iter()
                                .map(|a| format!("{} {:?}", a.name, a.labels))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    return None;
                }
                found
            }
            _ => return None,
        };
        for n in &names {
            if !known.contains(&n.as_str()) {
                self.err(
                    &key(which),
                    format!(
                        "no agent named {n:?}; the plan's agents are: {}",
                        known.join(", ")
                    ),
                );
                return None;
            }
        }
        if names.is_empty() {
            self.err(&key(which), "names no agent".into());
            return None;
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = names.iter().find(|n| !seen.insert(n.as_str())) {
            self.err(&key(which), format!("names agent {twice:?} twice"));
            return None;
        }
        Some((names, s.placement.unwrap_or(Placement::Each)))
    }

    /// `repeats:` checked: 1 to [`MAX_REPEATS`].
    fn repeats(&mut self, i: usize, raw: Option<u32>) -> u32 {
        match raw {
            None => 1,
            Some(n) if (1..=MAX_REPEATS).contains(&n) => n,
            Some(n) => {
                self.err(
                    &format!("test_scenarios[{i}].repeats"),
                    format!("must be 1 to {MAX_REPEATS} (runs of the scenario's rounds, each after its isolation), got {n}"),
                );
                1
            }
        }
    }

    /// Resolves each `baseline:` to a scenario as run: the one of that name, or, for a
    /// scenario run once per agent, the baseline's run on the same agent
    /// (`without-cache@gpu-a` for `with-cache@gpu-a`).
    fn baselines(&mut self, scenarios: &mut [Scenario], bases: &[(usize, usize)]) {
        let names: Vec<String> = scenarios.iter().map(|s| s.name.clone()).collect();
        for &(j, i) in bases {
            let Some(b) = scenarios[j].baseline.clone() else {
                continue;
            };
            let key = format!("test_scenarios[{i}].baseline");
            let own = &scenarios[j];
            let on_same_agent = match own.agents.as_slice() {
                [a] => Some(format!("{b}@{a}")),
                _ => None,
            };
            // The baseline's run with the same repeat index, else its first, else itself.
            let index = own.repeat.as_ref().map_or(1, |r| r.index);
            let found = on_same_agent.into_iter().chain([b.clone()]).find_map(|c| {
                [format!("{c}#{index}"), format!("{c}#1"), c]
                    .into_iter()
                    .find(|n| names.contains(n))
            });
            match found {
                Some(n) if n == own.name => {
                    self.err(
                        &key,
                        "names the scenario itself; name another scenario of the plan".into(),
                    );
                }
                Some(n) => scenarios[j].baseline = Some(n),
                None => self.err(
                    &key,
                    format!(
                        "no scenario named {b:?}; the plan's scenarios are: {}",
                        names.join(", ")
                    ),
                ),
            }
        }
    }

    /// The scenario as it runs: on its embedded agent, on one remote agent, once per agent
    /// (`each`: named `<name>@<agent>`) or across them (`split`: one scenario). A remote
    /// agent measures its own engine: the
    /// config's endpoint must be `agent` or that engine's URL (checked once the agent
    /// answers), never the embedded `sim`.
    fn expand(
        &mut self,
        i: usize,
        s: Scenario,
        placed: Option<(Vec<String>, Placement)>,
    ) -> Vec<Scenario> {
        let Some((names, placement)) = placed else {
            if s.config.endpoint == Endpoint::Agent {
                self.errors.push(PlanError {
                    file: s.config_path.clone(),
                    line: line_of(&s.config_path, "endpoint"),
                    key: "endpoint".into(),
                    message: format!("`agent` means the engine of the remote agent the scenario runs on, but test_scenarios[{i}] names no agent (agent:, agents: or selector:)"),
                });
            }
            return vec![s];
        };
        if s.config.endpoint == Endpoint::Sim {
            self.errors.push(PlanError {
                file: s.config_path.clone(),
                line: line_of(&s.config_path, "endpoint"),
                key: "endpoint".into(),
                message: "`sim` is the coordinator's embedded engine, but this scenario runs on remote agents, which measure the engine in their own config file: give `endpoint: agent`".into(),
            });
        }
        if names.len() == 1 || placement == Placement::Split {
            return vec![Scenario { agents: names, ..s }];
        }
        names
            .into_iter()
            .map(|a| {
                let name = format!("{}@{a}", s.name);
                Scenario {
                    slug: slug(&name),
                    name,
                    agents: vec![a],
                    ..s.clone()
                }
            })
            .collect()
    }

    fn scenario(&mut self, i: usize, s: RawScenario) -> Option<Scenario> {
        let key = |k: &str| format!("test_scenarios[{i}].{k}");
        let name = s.name.trim().to_owned();
        if name.is_empty() {
            self.err(&key("name"), "must not be empty".into());
        }
        let name_for_labels = name.clone();
        let sl = slug(&name);
        let rounds = s.rounds.unwrap_or(DEFAULT_ROUNDS);
        if rounds == 0 {
            self.err(
                &key("rounds"),
                "must be at least 1 (2 = cold start, then cache hit)".into(),
            );
        }
        let concurrency = s.concurrency.unwrap_or(1);
        if concurrency == 0 {
            self.err(
                &key("concurrency"),
                "must be at least 1 (absent = 1, serial)".into(),
            );
        }
        let config_path = self.config_file(&key("config_file"), &s.config_file)?;
        let config = match load_config(&config_path, s.scenario) {
            Ok(config) => config,
            Err(mut e) => {
                self.errors.append(&mut e.0);
                return None;
            }
        };
        if s.concurrency.is_some() && config.open_loop.is_some() {
            self.err(
                &key("concurrency"),
                format!(
                    "`concurrency` asks for a closed loop, but {} sets `request_rate`/`ramp_up` (an open loop); cap an open loop with `max_concurrency` in the config file instead",
                    s.config_file
                ),
            );
            return None;
        }
        let scenario = Scenario {
            name,
            slug: sl,
            config_file: s.config_file,
            config_path,
            kind: s.scenario,
            rounds,
            concurrency,
            config,
            agents: Vec::new(),
            targets: Vec::new(),
            labels: match s.labels {
                Some(own) => own,
                None => labels_from_name(&name_for_labels),
            },
            baseline: s.baseline.map(|b| b.trim().to_owned()),
            repeat: None,
        };
        // The trust boundary: the same check an agent makes before it allocates.
        for e in scenario.load_limits() {
            if e.field == "concurrency" {
                self.err(&key("concurrency"), e.message);
            } else {
                self.errors.push(config_error(&scenario.config_path, &e));
            }
        }
        Some(scenario)
    }

    /// The scenario's config file, resolved, when it is a file.
    fn config_file(&mut self, key: &str, raw: &str) -> Option<PathBuf> {
        let config_path = resolve(&self.base, raw);
        let shown = std::path::absolute(&config_path).unwrap_or(config_path.clone());
        if config_path.is_dir() {
            self.err(
                key,
                format!("{} is a folder, not a config file", shown.display()),
            );
            return None;
        }
        if !config_path.is_file() {
            self.err(
                key,
                format!(
                    "config file {raw:?} not found (looked for {}); paths resolve against the plan's folder",
                    shown.display()
                ),
            );
            return None;
        }
        Some(config_path)
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// Loads and validates one per-scenario config file for a workload type.
pub fn load_config(path: &Path, kind: WorkloadKind) -> Result<ScenarioConfig, PlanErrors> {
    let (index, raw): (YamlIndex, RawConfig) = read_yaml(path).map_err(|mut e| {
        // One struct holds every type's workload keys: name only this type's.
        if e.key.starts_with("workload.") && e.message.contains("valid keys here are") {
            e.message = format!(
                "`{kind}` does not use `{}`; its keys are: {}",
                e.key.trim_start_matches("workload."),
                WorkloadParams::accepted(kind).join(", ")
            );
        }
        e
    })?;
    let mut c = ConfigCheck {
        path,
        index: &index,
        errors: Vec::new(),
    };
    let endpoint = c.endpoint(&raw.endpoint);
    let num_requests = raw.num_requests.unwrap_or(kind.default_num_requests());
    if num_requests == 0 {
        c.err("num_requests", "must be at least 1".into());
    }
    let (output_tokens, output) = c.output(raw.output_tokens.as_ref(), kind);
    c.times(&raw);
    let open_loop = c.open_loop(&raw);
    let percentiles = c.percentiles(raw.percentiles.clone());
    if let Some(g) = &raw.goodput {
        c.goodput(g);
    }
    let dataset = raw.dataset.clone().map(|d| c.dataset(d));
    if dataset.is_some() && raw.workload.is_some() {
        c.err(
            "workload",
            "`workload` sizes shape generated requests; a `dataset` brings its own: remove one"
                .into(),
        );
    }
    let engine_tokenizer = raw.tokenizer.as_deref() == Some(Path::new("engine"));
    let tokenizer = raw
        .tokenizer
        .clone()
        .filter(|_| !engine_tokenizer)
        .map(|t| c.tokenizer(t));
    let params = raw.workload.unwrap_or_default();
    c.workload_keys(&params, kind);
    if !c.errors.is_empty() {
        return Err(PlanErrors(c.errors));
    }
    Ok(ScenarioConfig {
        endpoint,
        model: raw.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
        api: raw.api.unwrap_or(ApiFlavor::Chat),
        workload: WorkloadSpec {
            kind,
            seed: raw.seed.unwrap_or(DEFAULT_SEED),
            num_requests,
            output_tokens,
            output,
            params,
        },
        ttft_timeout_s: raw.ttft_timeout_s.unwrap_or(DEFAULT_TTFT_TIMEOUT_S),
        idle_timeout_s: raw.idle_timeout_s.unwrap_or(DEFAULT_IDLE_TIMEOUT_S),
        open_loop,
        duration_s: raw.duration_s,
        warmup_requests: raw.warmup_requests.unwrap_or(0),
        warmup_in_round_1: raw.warmup_in_round_1.unwrap_or(false),
        enforce_output_length: raw.enforce_output_length.unwrap_or(true),
        dataset,
        tokenizer,
        engine_tokenizer,
        stats: StatsOptions {
            percentiles,
            goodput: raw.goodput,
        },
    })
}

/// The checks of one scenario config file, each part on its own; every problem is
/// collected with the file, the line of its key and what would be valid.
struct ConfigCheck<'a> {
    path: &'a Path,
    index: &'a YamlIndex,
    errors: Vec<PlanError>,
}

fn positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

impl ConfigCheck<'_> {
    /// An error at the line of `key` (or of its nearest ancestor in the file).
    fn err(&mut self, key: &str, message: String) {
        self.err_at(key, self.index.line(key), message);
    }

    fn err_at(&mut self, key: &str, line: Option<usize>, message: String) {
        self.errors.push(PlanError {
            file: self.path.to_owned(),
            line,
            key: key.to_owned(),
            message,
        });
    }

    /// The line of `key` in the block `block:` (or of the block).
    fn line_in_block(&self, block: &str, key: &str) -> Option<usize> {
        self.index.line(&format!("{block}.{key}"))
    }

    fn endpoint(&mut self, raw: &str) -> Endpoint {
        match raw.trim() {
            "sim" => Endpoint::Sim,
            "agent" => Endpoint::Agent,
            u if u.starts_with("http://") && u.trim_end_matches('/').ends_with("/v1") => {
                self.err(
                    "endpoint",
                    format!("{u:?} ends in /v1, but kvbench adds /v1/chat/completions (or /v1/completions) itself: give the server's base URL, {:?}", u.trim_end_matches('/').trim_end_matches("/v1")),
                );
                Endpoint::Sim
            }
            u if u.starts_with("http://") => Endpoint::Url(u.trim_end_matches('/').to_owned()),
            u => {
                self.err(
                    "endpoint",
                    format!("must be `sim` (the embedded simulator) or an http:// base URL such as http://10.0.0.5:8000, got {u:?}"),
                );
                Endpoint::Sim
            }
        }
    }

    /// `output_tokens`: a number, or a distribution mapping.
    fn output(&mut self, raw: Option<&serde_yaml::Value>, kind: WorkloadKind) -> (u32, OutputDist) {
        match raw {
            None => (kind.default_output_tokens(), OutputDist::Fixed),
            Some(serde_yaml::Value::Number(n)) => match n.as_u64() {
                Some(v) if v >= 1 && v <= u64::from(MAX_OUTPUT_TOKENS) => {
                    (v as u32, OutputDist::Fixed)
                }
                _ => {
                    self.err("output_tokens", format!("must be a whole number of tokens from 1 to {MAX_OUTPUT_TOKENS}, got {n}"));
                    (1, OutputDist::Fixed)
                }
            },
            Some(v @ serde_yaml::Value::Mapping(_)) => self.distribution(v),
            Some(other) => {
                self.err(
                    "output_tokens",
                    format!(
                        "must be a number or a distribution mapping, got {}",
                        yaml_brief(other)
                    ),
                );
                (1, OutputDist::Fixed)
            }
        }
    }

    fn distribution(&mut self, v: &serde_yaml::Value) -> (u32, OutputDist) {
        match serde_yaml::from_value::<OutputDist>(v.clone()) {
            Ok(d) => {
                let bad = match d {
                    OutputDist::Fixed => Some("`fixed` takes a number: write `output_tokens: 64`".to_owned()),
                    OutputDist::Uniform { min, max } if min == 0 || max < min => {
                        Some(format!("uniform needs 1 <= min <= max, got min {min}, max {max}"))
                    }
                    OutputDist::Normal { mean, std } if !(mean >= 1.0 && std >= 0.0) => {
                        Some(format!("normal needs mean >= 1 and std >= 0, got mean {mean}, std {std}"))
                    }
                    OutputDist::Lognormal { mean, sigma } if !(mean >= 1.0 && sigma >= 0.0) => {
                        Some(format!("lognormal needs mean >= 1 and sigma >= 0, got mean {mean}, sigma {sigma}"))
                    }
                    _ => None,
                };
                if let Some(b) = bad {
                    self.err("output_tokens", b);
                }
                (d.mean(1).round().max(1.0) as u32, d)
            }
            Err(e) => {
                self.err(
                    "output_tokens",
                    format!("{e}; write a number, or a mapping such as {{distribution: uniform, min: 32, max: 256}} (distributions: uniform {{min, max}}, normal {{mean, std}}, lognormal {{mean, sigma}})"),
                );
                (1, OutputDist::Fixed)
            }
        }
    }

    /// Timeouts and `duration_s`: seconds > 0.
    fn times(&mut self, raw: &RawConfig) {
        for (k, v) in [
            ("ttft_timeout_s", raw.ttft_timeout_s),
            ("idle_timeout_s", raw.idle_timeout_s),
            ("duration_s", raw.duration_s),
        ] {
            if let Some(v) = v.filter(|v| !positive(*v)) {
                self.err(k, format!("must be a number of seconds > 0, got {v}"));
            }
        }
    }

    /// `request_rate`: requests/s, or `inf` (all at once).
    fn rate(&mut self, raw: Option<&serde_yaml::Value>) -> Option<f64> {
        match raw? {
            serde_yaml::Value::Number(n) => match n.as_f64() {
                Some(r) if r > 0.0 => Some(r),
                _ => {
                    self.err(
                        "request_rate",
                        format!("must be > 0 requests/s or `inf`, got {n}"),
                    );
                    None
                }
            },
            serde_yaml::Value::String(t)
                if ["inf", "infinity", ".inf"].contains(&t.to_ascii_lowercase().as_str()) =>
            {
                Some(f64::INFINITY)
            }
            other => {
                self.err(
                    "request_rate",
                    format!(
                        "must be a number of requests/s or `inf` (all at once), got {}",
                        yaml_brief(other)
                    ),
                );
                None
            }
        }
    }

    /// The open loop of `request_rate` or `ramp_up` (none: a closed loop).
    fn open_loop(&mut self, raw: &RawConfig) -> Option<OpenLoop> {
        let rate = self.rate(raw.request_rate.as_ref());
        let burstiness = raw.burstiness.unwrap_or(1.0);
        if !positive(burstiness) {
            self.err(
                "burstiness",
                format!("must be > 0 (1.0 = Poisson), got {burstiness}"),
            );
        }
        let ramp = raw.ramp_up.as_ref().map(|r| {
            for (k, v) in [("start_rate", r.start_rate), ("end_rate", r.end_rate)] {
                if !positive(v) {
                    self.err(
                        &format!("ramp_up.{k}"),
                        format!("must be a rate > 0 requests/s, got {v}"),
                    );
                }
            }
            Rate::Ramp {
                strategy: r.strategy,
                start: r.start_rate,
                end: r.end_rate,
            }
        });
        if rate.is_some() && ramp.is_some() {
            self.err(
                "ramp_up",
                "give either `request_rate` or `ramp_up`, not both".into(),
            );
        }
        if raw.max_concurrency == Some(0) {
            self.err("max_concurrency", "must be at least 1".into());
        }
        let rate = match (rate, ramp) {
            (Some(r), _) => Rate::Fixed(r),
            (None, Some(r)) => r,
            (None, None) => {
                for (k, set) in [
                    ("max_concurrency", raw.max_concurrency.is_some()),
                    ("burstiness", raw.burstiness.is_some()),
                ] {
                    if set {
                        self.err(k, format!("`{k}` shapes an open loop: set `request_rate` or `ramp_up` too (a closed loop takes the plan's `concurrency`)"));
                    }
                }
                return None;
            }
        };
        Some(OpenLoop {
            rate,
            burstiness,
            max_concurrency: raw.max_concurrency,
        })
    }

    fn percentiles(&mut self, raw: Option<Vec<f64>>) -> Vec<f64> {
        let percentiles = raw.unwrap_or_else(|| DEFAULT_PERCENTILES.to_vec());
        if percentiles.is_empty()
            || percentiles
                .iter()
                .any(|p| !(p.is_finite() && *p > 0.0 && *p < 100.0))
        {
            self.err(
                "percentiles",
                format!(
                    "must be a list of numbers strictly between 0 and 100, got {percentiles:?}"
                ),
            );
        }
        percentiles
    }

    fn goodput(&mut self, g: &Goodput) {
        for (k, v) in [
            ("ttft_ms", g.ttft_ms),
            ("tpot_ms", g.tpot_ms),
            ("e2el_ms", g.e2el_ms),
        ] {
            if let Some(v) = v.filter(|v| !positive(*v)) {
                self.err(
                    &format!("goodput.{k}"),
                    format!("must be a number of milliseconds > 0, got {v}"),
                );
            }
        }
        if g.ttft_ms.is_none() && g.tpot_ms.is_none() && g.e2el_ms.is_none() {
            self.err(
                "goodput",
                "set at least one of ttft_ms, tpot_ms, e2el_ms".into(),
            );
        }
    }

    /// A path of this file, resolved against its folder.
    fn resolve(&self, p: PathBuf) -> PathBuf {
        if p.is_relative() {
            self.path.parent().map(|b| b.join(&p)).unwrap_or(p)
        } else {
            p
        }
    }

    fn dataset(&mut self, mut d: DatasetSpec) -> DatasetSpec {
        d.path = self.resolve(d.path);
        if !d.path.is_file() {
            let line = self.line_in_block("dataset", "path");
            self.err_at(
                "dataset.path",
                line,
                format!(
                    "dataset file {} not found; paths resolve against this file's folder",
                    d.path.display()
                ),
            );
        }
        if !positive(d.speedup) {
            let line = self.line_in_block("dataset", "speedup");
            self.err_at(
                "dataset.speedup",
                line,
                format!("must be > 0, got {}", d.speedup),
            );
        }
        d
    }

    fn tokenizer(&mut self, t: PathBuf) -> PathBuf {
        let t = self.resolve(t);
        if !t.is_file() {
            self.err(
                "tokenizer",
                format!("tokenizer file {} not found (a Hugging Face tokenizer.json, paths resolving against this file's folder; or `engine`: the engine's own /tokenize)", t.display()),
            );
        }
        t
    }

    /// Each workload type accepts only its own keys.
    fn workload_keys(&mut self, params: &WorkloadParams, kind: WorkloadKind) {
        let accepted = WorkloadParams::accepted(kind);
        for f in params.set_fields() {
            if !accepted.contains(&f) {
                let line = self.line_in_block("workload", f);
                self.err_at(
                    &format!("workload.{f}"),
                    line,
                    format!(
                        "`{kind}` does not use `{f}`; its keys are: {}",
                        accepted.join(", ")
                    ),
                );
            }
        }
    }
}

fn yaml_brief(v: &serde_yaml::Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim().chars().take(60).collect())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_inside_list_items() {
        let text = "output_dir: x\ntest_scenarios:\n  - name: a\n    config_file: a.yaml\n  - name: b\n    # c\n    rounds: 3\n    config_file: b.yaml\nwait_between_scenarios: 1\n";
        let ix = YamlIndex::of(text);
        assert_eq!(ix.line("test_scenarios[0].config_file"), Some(4));
        assert_eq!(ix.line("test_scenarios[1].config_file"), Some(8));
        assert_eq!(ix.line("test_scenarios[1].name"), Some(5));
        assert_eq!(ix.line("test_scenarios[1].rounds"), Some(7));
        assert_eq!(ix.line("wait_between_scenarios"), Some(9));
    }
}
