//! Runs a plan: scenarios in order, each after its isolation step, each through the agent
//! serving its endpoint (see [`super::scenario`]). The run's story goes to an
//! [`Observer`]; its files are written through [`crate::output`]; the reports, once the run
//! file is final, by the [`WriteReports`] the caller gives (the presenters'). This module
//! prints nothing.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use kvbench_common::plan::Plan;
use kvbench_common::results::ScenarioStatus;
use kvbench_common::util::timestamp_utc;
use tokio_util::sync::CancellationToken;

use super::events::{Observer, RunEvent};
use super::inputs::Inputs;
use super::isolation;
use super::outcome::RunSummary;
use super::scenario::Session;
use crate::agents::{AgentClient, AgentSet};
use crate::output::{self, RunFile};

/// The reports a run's end produced.
#[derive(Debug, Clone)]
pub struct WrittenReports {
    /// `multi_scenario_report_<ts>.md`.
    pub report: PathBuf,
    /// `report.html` beside it.
    pub html: PathBuf,
    /// Something the reader of the reports must know (a label the charts' font lacks).
    pub warning: Option<String>,
}

/// Writes the reports of the run whose file is the second path, into the folder that is
/// the first; run on a blocking thread (charts are drawn on the CPU).
pub type WriteReports = fn(&Path, &Path) -> anyhow::Result<WrittenReports>;

/// Runs every scenario of `plan` with the agent serving its endpoint.
pub async fn run_plan(
    plan: &Plan,
    inputs: &Inputs,
    agents: &AgentSet,
    cancel: CancellationToken,
    obs: &mut dyn Observer,
    reports: WriteReports,
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let run_ts = timestamp_utc(SystemTime::now());
    output::create_output_dir(&plan.output_dir)?;
    obs.on(&RunEvent::RunStarted {
        plan,
        agents: agents.all().map(AgentClient::info).collect(),
    });
    let mut run_file = RunFile::start(
        plan,
        &run_ts,
        agents
            .all()
            .map(|a| output::run_agent(a.info(), a.url(), plan))
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
        run_file.scenario_ran(
            i,
            outcome.stats.status,
            [
                outcome.stats_path.as_deref(),
                outcome.results_path.as_deref(),
                outcome.telemetry_path.as_deref(),
            ],
        );
        save_run_file(&run_file, plan, obs);
        outcomes.push(outcome);
        if cancelled {
            break;
        }
    }
    run_file.end(cancelled);
    let written = match save_run_file(&run_file, plan, obs) {
        Some(path) => write_reports(plan, path, reports, obs).await,
        None => None,
    };
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

/// Writes the reports of the run whose file is `path` on a blocking thread: the markdown's
/// and the HTML's paths, or none (told as a problem) when they could not be written.
async fn write_reports(
    plan: &Plan,
    path: PathBuf,
    write: WriteReports,
    obs: &mut dyn Observer,
) -> Option<(PathBuf, PathBuf)> {
    let dir = plan.output_dir.clone();
    let written = tokio::task::spawn_blocking(move || write(&dir, &path))
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("the report writer stopped: {e}")));
    match written {
        Ok(w) => {
            if let Some(warning) = w.warning {
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
