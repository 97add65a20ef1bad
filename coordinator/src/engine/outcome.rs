//! How a scenario and a whole run ended: what the engine hands to the presenters and to
//! the CLI, which decides the exit status from it.

use std::path::PathBuf;
use std::time::Duration;

use kvbench_common::isolation::Verdict;
use kvbench_common::results::{ScenarioStats, ScenarioStatus};

/// How one scenario ended.
#[derive(Debug, Clone)]
pub struct ScenarioOutcome {
    pub name: String,
    pub stats: ScenarioStats,
    /// None when the file could not be written (the scenario then failed).
    pub stats_path: Option<PathBuf>,
    pub results_path: Option<PathBuf>,
    /// `<slug>_telemetry_<ts>.jsonl`: one telemetry sample per line (none: no samples).
    pub telemetry_path: Option<PathBuf>,
    pub records: usize,
    /// Agents lost during its rounds: what they measured after it is fetched later.
    pub lost: Vec<LostPart>,
}

/// A round's part whose agent was lost: the agent keeps the events after `held` for the
/// round's reconnect window; the run fetches them when it reaches the agent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostPart {
    pub agent: String,
    pub scenario_id: String,
    pub scenario: String,
    pub round: u32,
    pub held: u64,
    /// Where the records fetched later go (`<slug>_late_records_<ts>.jsonl`).
    pub late_records: PathBuf,
    /// Past this the agent no longer keeps them.
    pub until: std::time::Instant,
}

impl ScenarioOutcome {
    pub fn succeeded(&self) -> bool {
        self.stats.status == ScenarioStatus::Completed
    }

    /// Requests of measured rounds that failed.
    pub fn failed_requests(&self) -> u32 {
        self.stats.rounds.iter().map(|r| r.failed).sum()
    }
}

/// How the whole plan ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub scenarios: Vec<ScenarioOutcome>,
    pub cancelled: bool,
    pub total: Duration,
    /// `multi_scenario_report_<ts>.md` (none: it could not be written; the run said why).
    pub report: Option<PathBuf>,
    /// `report.html` beside it.
    pub html_report: Option<PathBuf>,
    /// The run stopped because records could not be written (it is resumable).
    pub output_failure: Option<crate::output::scenario_files::SpoolError>,
}

impl RunSummary {
    /// The capacities of the run's swept scenarios with objectives (`slo:`).
    pub fn capacities(&self) -> Vec<kvbench_common::sweep::SweepCapacity> {
        let runs: Vec<_> = self
            .scenarios
            .iter()
            .filter_map(|s| {
                Some((
                    s.name.as_str(),
                    s.stats.scenario.sweep.as_ref()?,
                    Some(&s.stats),
                ))
            })
            .collect();
        kvbench_common::sweep::capacities(&runs)
    }

    fn count(&self, status: ScenarioStatus) -> usize {
        self.scenarios
            .iter()
            .filter(|s| s.stats.status == status)
            .count()
    }

    /// Scenarios that failed, were cancelled, or lost one of their agents (partial).
    pub fn failed(&self) -> usize {
        self.count(ScenarioStatus::Failed)
            + self.count(ScenarioStatus::Cancelled)
            + self.count(ScenarioStatus::Partial)
    }

    /// Scenarios that ran but failed more requests than `max_error_rate` allows.
    pub fn degraded(&self) -> usize {
        self.count(ScenarioStatus::Degraded)
    }

    /// Scenarios whose round 1 was not a cold start.
    pub fn not_cold(&self) -> Vec<&str> {
        self.scenarios
            .iter()
            .filter(|o| o.stats.isolation.verdict == Verdict::Failed)
            .map(|o| o.name.as_str())
            .collect()
    }
}
