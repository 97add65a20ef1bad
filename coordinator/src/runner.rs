//! Runs a plan: scenarios in order, each after its isolation step, each through the agent
//! serving its endpoint (see [`crate::session`]). The run's story goes to an
//! [`Observer`]; this module prints nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use kvbench_common::plan::Plan;
use kvbench_common::stats::{ScenarioStats, ScenarioStatus, Verdict};
use kvbench_common::util::timestamp_utc;
use tokio_util::sync::CancellationToken;

use crate::agent_client::AgentClient;
use crate::events::{Observer, RunEvent};
use crate::inputs::Inputs;
use crate::isolation;
use crate::report::{self, RunFile};
use crate::session::Session;

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
}

impl RunSummary {
    fn count(&self, status: ScenarioStatus) -> usize {
        self.scenarios
            .iter()
            .filter(|s| s.stats.status == status)
            .count()
    }

    /// Scenarios that failed or were cancelled.
    pub fn failed(&self) -> usize {
        self.count(ScenarioStatus::Failed) + self.count(ScenarioStatus::Cancelled)
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

/// Runs every scenario of `plan` with the agent serving its endpoint.
pub async fn run_plan(
    plan: &Plan,
    inputs: &Inputs,
    agents: &crate::agents::AgentSet,
    cancel: CancellationToken,
    obs: &mut dyn Observer,
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let run_ts = timestamp_utc(SystemTime::now());
    std::fs::create_dir_all(&plan.output_dir)
        .with_context(|| format!("cannot create output folder {}", plan.output_dir.display()))?;
    obs.on(&RunEvent::RunStarted {
        plan,
        agents: agents.all().map(AgentClient::info).collect(),
    });
    let mut run_file = RunFile::start(
        plan,
        &run_ts,
        agents
            .all()
            .map(|a| report::run_agent(a.info(), a.url(), plan))
            .collect(),
    );
    save_run_file(&run_file, plan, obs);
    let mut outcomes = Vec::new();
    let mut cancelled = false;
    for (i, scenario) in plan.scenarios.iter().enumerate() {
        if cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        let on = agents
            .for_scenario(scenario)
            .map_err(|e| anyhow::anyhow!("scenario {}: {e}", scenario.name))?;
        let isolation = if i == 0 && !plan.isolate_before_first {
            isolation::none_before_first(plan)
        } else {
            let iso = isolation::isolate(plan, &on, &cancel, obs).await;
            if cancel.is_cancelled() {
                cancelled = true;
                break;
            }
            iso
        };
        obs.on(&RunEvent::ScenarioStarted {
            index: i + 1,
            total: plan.scenarios.len(),
            scenario,
            agents: on.iter().map(|a| a.info()).collect(),
        });
        let scenario_id = format!("{}-{}-{}", scenario.slug, run_ts, i);
        let outcome = Session {
            plan,
            scenario,
            agents: &on,
            scenario_id: &scenario_id,
            dataset: inputs.dataset(i),
            tokenizer: inputs.tokenizer(i),
            cancel: &cancel,
        }
        .run(isolation, obs)
        .await;
        cancelled |= outcome.stats.status == ScenarioStatus::Cancelled;
        run_file.scenario_ran(i, &outcome);
        save_run_file(&run_file, plan, obs);
        outcomes.push(outcome);
        if cancelled {
            break;
        }
    }
    run_file.end(cancelled);
    let written =
        save_run_file(&run_file, plan, obs).and_then(|path| write_report(plan, &path, obs));
    let (report, html_report) = written.unzip();
    let summary = RunSummary {
        scenarios: outcomes,
        cancelled,
        total: started.elapsed(),
        report,
        html_report,
    };
    obs.on(&RunEvent::RunFinished {
        plan,
        summary: &summary,
    });
    Ok(summary)
}

/// Writes the reports of the run whose file is `path`: the markdown's and the HTML's paths,
/// or none (told as a problem) when they could not be written.
fn write_report(plan: &Plan, path: &Path, obs: &mut dyn Observer) -> Option<(PathBuf, PathBuf)> {
    match report::write(&plan.output_dir, path, None) {
        Ok(w) => {
            if let Some(warning) = w.glyph_warning() {
                obs.on(&RunEvent::Problem(warning));
            }
            Some((w.report, w.html))
        }
        Err(e) => {
            obs.on(&RunEvent::Problem(format!(
                "cannot write the report: {e:#}"
            )));
            None
        }
    }
}

/// Writes the run file; a failure is told, and the run goes on.
fn save_run_file(run: &RunFile, plan: &Plan, obs: &mut dyn Observer) -> Option<PathBuf> {
    run.save(&plan.output_dir)
        .map_err(|e| {
            obs.on(&RunEvent::Problem(format!(
                "cannot write the run file: {e:#}"
            )))
        })
        .ok()
}
