//! The run file, `multi_scenario_run_<ts>.json` ([`RunFile`]): what a report needs beyond
//! the scenarios' stats files (the plan, the agents, the isolation policy, the targets and
//! the scenarios in order with their files). It is written when the run starts and again
//! after each scenario, so that a run that dies leaves it too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kvbench_common::agent::AgentInfo;
use kvbench_common::plan::{IsolationPolicy, Plan};
use kvbench_common::results::ScenarioStatus;
use kvbench_common::targets::Target;
use serde::{Deserialize, Serialize};

/// How far the run got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Still running, or it died before its end (nothing wrote its end).
    Running,
    /// Every scenario's turn came.
    Finished,
    /// The user stopped it.
    Cancelled,
}

/// An agent as the run saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunAgent {
    pub name: String,
    pub address: String,
    pub hostname: String,
    pub version: String,
    /// The plan's labels of it over its own.
    pub labels: BTreeMap<String, String>,
    /// Its GPUs in a few words, or why there are none.
    pub gpus: String,
    pub engine_kind: String,
    pub engine_url: String,
    pub engine_models: Vec<String>,
    /// As the engine reports it; empty when it reports none.
    #[serde(default)]
    pub engine_version: String,
}

/// A scenario of the plan, in order, and where its results are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunScenario {
    pub name: String,
    /// None until it has run.
    pub status: Option<ScenarioStatus>,
    /// Its stats file's name in the run's folder (none: not run, or not written).
    pub stats_file: Option<String>,
    pub results_file: Option<String>,
    /// Its GPU, host and engine samples (`<slug>_telemetry_<ts>.jsonl`), when any were written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_file: Option<String>,
    pub targets: Vec<Target>,
    /// The remote agents it ran on (none: the embedded agent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
    /// Its labels: its agents' (those all of them share), then its own or those its name
    /// gives (`<platform>-<deployment>-<model>`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The scenario it is compared with besides its round 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// What it sends: its type, rounds, concurrency, seed and config file's SHA-256
    /// (`kvbench compare` compares only scenarios whose workloads are the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// A scenario with `repeats:`: which of its runs this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<kvbench_common::plan::Repeat>,
    /// A scenario with `sweep:`: which of its loads this is, with its objectives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<kvbench_common::plan::SweepPoint>,
    /// Its latest attempt, from when it started: what a resumed run needs of an attempt
    /// that was interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<Attempt>,
    /// A point of a `search:` that did not run because the search had found its boundary
    /// (its status stays null).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_needed: bool,
}

/// What a scenario sends, in a line: `kvbench compare` compares only scenarios whose
/// workloads are the same.
fn workload(s: &kvbench_common::plan::Scenario) -> String {
    format!(
        "{} x{} rounds, concurrency {}, seed {}, config sha256 {}",
        s.kind.label(),
        s.rounds,
        s.concurrency,
        s.config.workload.seed,
        sha256_file(&s.config_path).unwrap_or_else(|| "unreadable".into())
    )
}

/// A scenario's attempt as it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The id its agents know its rounds by.
    pub scenario_id: String,
    /// Its record spool's name in the run's folder (removed once its results file is
    /// written; left behind by an interrupted attempt).
    pub records_file: String,
    pub started_at: String,
}

/// A file the run read, and its SHA-256 when it was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HashedFile {
    /// `plan`, `config`, `dataset`, `tokenizer` or `agent_config`.
    pub role: String,
    pub path: String,
    /// Lower-case hex; none when the file could not be read.
    pub sha256: Option<String>,
}

/// What makes a run reproducible, taken when it starts: the files it read and their
/// hashes, and each scenario's workload seed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub files: Vec<HashedFile>,
    /// The workload seed of each scenario, by name.
    pub seeds: BTreeMap<String, u64>,
}

/// The SHA-256 of the file at `path`, in lower-case hex.
pub fn sha256_file(path: &Path) -> Option<String> {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

impl Provenance {
    pub fn of(plan: &Plan) -> Provenance {
        let mut files: Vec<HashedFile> = Vec::new();
        let mut add = |role: &str, path: &Path| {
            // Absolute: a resumed run finds it from wherever it is started.
            let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
            let shown = path.display().to_string();
            if !files.iter().any(|f| f.path == shown) {
                files.push(HashedFile {
                    role: role.to_owned(),
                    path: shown,
                    sha256: sha256_file(&path),
                });
            }
        };
        add("plan", &plan.path);
        if let Some(a) = &plan.agent_config {
            add("agent_config", a);
        }
        for s in &plan.scenarios {
            add("config", &s.config_path);
            if let Some(d) = &s.config.dataset {
                add("dataset", &d.path);
            }
            if let Some(t) = &s.config.tokenizer {
                add("tokenizer", t);
            }
        }
        Provenance {
            files,
            seeds: plan
                .scenarios
                .iter()
                .map(|s| (s.name.clone(), s.config.workload.seed))
                .collect(),
        }
    }
}

/// `multi_scenario_run_<ts>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFile {
    pub kvbench_version: String,
    /// The `<ts>` of the run's file names.
    pub timestamp: String,
    pub plan_file: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub state: RunState,
    pub isolation_policy: IsolationPolicy,
    pub wait_between_scenarios_s: f64,
    pub agents: Vec<RunAgent>,
    /// The plan-wide targets.
    pub targets: Vec<Target>,
    pub scenarios: Vec<RunScenario>,
    /// The files the run read, hashed, and its seeds.
    #[serde(default)]
    pub provenance: Provenance,
    /// The latest `kvbench calibrate` of the host the run started on, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<super::calibration::Record>,
    /// When the run was interrupted and resumed (`kvbench run --resume`), each time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumed: Vec<Resumed>,
}

/// One resumption of an interrupted run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resumed {
    pub at: String,
    /// How the run stood before (`running`: the coordinator was killed; `cancelled`: it
    /// was stopped by a signal).
    pub after: RunState,
    /// Scenarios that had ended, kept as they were.
    pub kept: Vec<String>,
    /// Scenarios run (again) from their isolation step.
    pub rerun: Vec<String>,
}

impl RunFile {
    /// A run of `plan` about to start.
    pub fn start(plan: &Plan, timestamp: &str, agents: Vec<RunAgent>) -> RunFile {
        RunFile {
            kvbench_version: env!("CARGO_PKG_VERSION").to_owned(),
            timestamp: timestamp.to_owned(),
            plan_file: std::fs::canonicalize(&plan.path)
                .unwrap_or_else(|_| plan.path.clone())
                .display()
                .to_string(),
            started_at: kvbench_common::util::rfc3339_utc(std::time::SystemTime::now()),
            finished_at: None,
            state: RunState::Running,
            isolation_policy: plan.isolation,
            wait_between_scenarios_s: plan.wait_between_scenarios_s,
            targets: plan.targets.clone(),
            scenarios: plan
                .scenarios
                .iter()
                .map(|s| RunScenario {
                    name: s.name.clone(),
                    status: None,
                    stats_file: None,
                    results_file: None,
                    telemetry_file: None,
                    targets: s.targets.clone(),
                    agents: s.agents.clone(),
                    labels: scenario_labels(s, &agents),
                    baseline: s.baseline.clone(),
                    repeat: s.repeat.clone(),
                    sweep: s.sweep.clone(),
                    attempt: None,
                    workload: Some(workload(s)),
                    not_needed: false,
                })
                .collect(),
            agents,
            provenance: Provenance::of(plan),
            calibration: super::calibration::Record::of_this_host(),
            resumed: Vec::new(),
        }
    }

    /// The `i`-th scenario starts this attempt.
    pub fn scenario_started(&mut self, i: usize, attempt: Attempt) {
        if let Some(entry) = self.scenarios.get_mut(i) {
            entry.attempt = Some(attempt);
        }
    }

    /// A point of a `search:` got its load (`point`: the scenario as it runs).
    pub fn point_chosen(&mut self, i: usize, point: &kvbench_common::plan::Scenario) {
        if let Some(entry) = self.scenarios.get_mut(i) {
            entry.sweep = point.sweep.clone();
            entry.workload = Some(workload(point));
            entry.not_needed = false;
        }
    }

    /// A point of a `search:` that the search did not need: it found its boundary first.
    pub fn point_not_needed(&mut self, i: usize) {
        if let Some(entry) = self.scenarios.get_mut(i) {
            entry.not_needed = true;
        }
    }

    /// The run goes on after an interruption: it is running again, and says so.
    pub fn resume(&mut self, kept: Vec<String>, rerun: Vec<String>) {
        self.resumed.push(Resumed {
            at: kvbench_common::util::rfc3339_utc(std::time::SystemTime::now()),
            after: self.state,
            kept,
            rerun,
        });
        self.state = RunState::Running;
        self.finished_at = None;
    }

    /// The `i`-th scenario of the plan has run, ending `status`, with the files that were
    /// written (stats, results, telemetry).
    pub fn scenario_ran(&mut self, i: usize, status: ScenarioStatus, files: [Option<&Path>; 3]) {
        let [stats, results, telemetry] = files.map(|p| {
            p.and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
        });
        if let Some(entry) = self.scenarios.get_mut(i) {
            entry.status = Some(status);
            entry.stats_file = stats;
            entry.results_file = results;
            entry.telemetry_file = telemetry;
        }
    }

    /// The run reached its end (`cancelled`: the user stopped it).
    pub fn end(&mut self, cancelled: bool) {
        self.state = if cancelled {
            RunState::Cancelled
        } else {
            RunState::Finished
        };
        self.finished_at = Some(kvbench_common::util::rfc3339_utc(
            std::time::SystemTime::now(),
        ));
    }

    /// Its path in `dir`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("multi_scenario_run_{}.json", self.timestamp))
    }

    /// The report's path in `dir`.
    pub fn report_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("multi_scenario_report_{}.md", self.timestamp))
    }

    /// Writes it through a temporary file and a rename.
    pub fn save(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = self.path(dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot rename to {}", path.display()))?;
        Ok(path)
    }

    pub fn load(path: &Path) -> anyhow::Result<RunFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a run file", path.display()))
    }
}

/// A scenario's labels: those all its agents share, then its own over them.
fn scenario_labels(
    s: &kvbench_common::plan::Scenario,
    agents: &[RunAgent],
) -> BTreeMap<String, String> {
    let mine: Vec<&RunAgent> = agents
        .iter()
        .filter(|a| s.agents.contains(&a.name))
        .collect();
    let mut labels = BTreeMap::new();
    if let Some((first, rest)) = mine.split_first() {
        for (k, v) in &first.labels {
            if rest.iter().all(|a| a.labels.get(k) == Some(v)) {
                labels.insert(k.clone(), v.clone());
            }
        }
    }
    labels.extend(s.labels.clone());
    labels
}

/// The run's agent from what the handshake told, with the plan's labels over its own.
pub fn run_agent(info: &AgentInfo, address: &str, plan: &Plan) -> RunAgent {
    let mut labels = info.labels.clone();
    if let Some(spec) = plan.agent(&info.agent_name) {
        labels.extend(spec.labels.clone());
    }
    RunAgent {
        name: info.agent_name.clone(),
        address: address.to_owned(),
        hostname: info.hostname.clone(),
        version: info.agent_version.clone(),
        labels,
        gpus: info.gpu_summary(),
        engine_kind: info.engine_kind.clone(),
        engine_url: info.engine_display.clone(),
        engine_models: info.engine_models.clone(),
        engine_version: info.engine_version.clone(),
    }
}

/// The newest run file in `dir` (their names sort by time).
pub fn latest_run(dir: &Path) -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the folder {}", dir.display()))?;
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("multi_scenario_run_") && n.ends_with(".json"))
        })
        .max()
        .with_context(|| {
            format!(
                "{} holds no run file (multi_scenario_run_<ts>.json): it is written by `kvbench run` into the output folder",
                dir.display()
            )
        })
}
