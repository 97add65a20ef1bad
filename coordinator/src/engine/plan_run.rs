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
    let run_ts = timestamp_utc(SystemTime::now());
    let run_file = RunFile::start(
        plan,
        &run_ts,
        agents
            .all()
            .map(|a| output::run_agent(a.info(), a.url(), plan))
            .collect(),
    );
    run(plan, inputs, agents, cancel, obs, reports, run_file, false).await
}

/// Resumes the interrupted run whose file is `run_file` (in `plan.output_dir`): the
/// scenarios that ended are kept as they are; the others run from their isolation step
/// (always isolated: an interrupted one left its engine warm), each after what its
/// interrupted attempt's agents still kept was fetched into that attempt's records file.
pub async fn resume_plan(
    plan: &Plan,
    inputs: &Inputs,
    agents: &AgentSet,
    cancel: CancellationToken,
    obs: &mut dyn Observer,
    reports: WriteReports,
    mut run_file: RunFile,
) -> anyhow::Result<RunSummary> {
    let (kept, rerun): (Vec<_>, Vec<_>) = run_file
        .scenarios
        .iter()
        .partition(|s| super::resume::ended(s.status));
    let names =
        |v: Vec<&output::run_file::RunScenario>| v.into_iter().map(|s| s.name.clone()).collect();
    let (kept, rerun) = (names(kept), names(rerun));
    run_file.resume(kept, rerun);
    run(plan, inputs, agents, cancel, obs, reports, run_file, true).await
}

#[allow(clippy::too_many_arguments)]
async fn run(
    plan: &Plan,
    inputs: &Inputs,
    agents: &AgentSet,
    cancel: CancellationToken,
    obs: &mut dyn Observer,
    reports: WriteReports,
    mut run_file: RunFile,
    resumed: bool,
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let run_ts = run_file.timestamp.clone();
    output::create_output_dir(&plan.output_dir)?;
    obs.on(&RunEvent::RunStarted {
        plan,
        agents: agents.all().map(AgentClient::info).collect(),
    });
    save_run_file(&run_file, plan, obs);
    let mut outcomes = Vec::new();
    let mut cancelled = false;
    let mut lost: Vec<super::outcome::LostPart> = Vec::new();
    let output_failure = std::sync::OnceLock::new();
    // The first scenario that runs after a resumption is isolated whatever its place.
    let mut isolate_next = resumed;
    for (i, scenario) in plan.scenarios.iter().enumerate() {
        if cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        if resumed {
            if let Some(kept) = super::resume::kept_outcome(&run_file, i, &plan.output_dir) {
                obs.on(&RunEvent::ScenarioKept {
                    index: i + 1,
                    total: plan.scenarios.len(),
                    outcome: &kept,
                });
                outcomes.push(kept);
                continue;
            }
        }
        // A point of a search runs at the load its earlier points chose, or not at all.
        let chosen;
        let scenario = match next_point(scenario, &outcomes) {
            Next::Plain => scenario,
            Next::At(load) => {
                chosen = scenario.at_search_load(load);
                run_file.point_chosen(i, &chosen);
                &chosen
            }
            Next::NotNeeded => {
                run_file.point_not_needed(i);
                save_run_file(&run_file, plan, obs);
                obs.on(&RunEvent::PointNotNeeded {
                    index: i + 1,
                    total: plan.scenarios.len(),
                    scenario,
                });
                continue;
            }
        };
        let on = agents
            .for_scenario(scenario)
            .map_err(|e| anyhow::anyhow!("scenario {}: {e}", scenario.name))?;
        fetch_late(&mut lost, agents, obs).await;
        let interruption = match run_file.scenarios.get(i).and_then(|s| s.attempt.clone()) {
            Some(attempt) if resumed => {
                let before = run_file.scenarios[i].status;
                Some(interrupted(plan, scenario, &attempt, before, &on, obs).await)
            }
            _ => None,
        };
        // A sweep's every point starts cold, its first one too.
        let isolation =
            if i == 0 && !plan.isolate_before_first && scenario.sweep.is_none() && !isolate_next {
                isolation::none_before_first(plan)
            } else {
                let iso = isolation::isolate(plan, &on, &cancel, obs).await;
                if cancel.is_cancelled() {
                    cancelled = true;
                    break;
                }
                iso
            };
        isolate_next = false;
        obs.on(&RunEvent::ScenarioStarted {
            index: i + 1,
            total: plan.scenarios.len(),
            scenario,
            agents: on.iter().map(|a| a.info()).collect(),
        });
        // An attempt of a resumed run gets an id of its own: its agents may still keep
        // the interrupted one's rounds.
        let scenario_id = match run_file.resumed.len() {
            0 => format!("{}-{}-{}", scenario.slug, run_ts, i),
            n => format!("{}-{}-{}-r{n}", scenario.slug, run_ts, i),
        };
        // One timestamp names all of this scenario's files.
        let files = crate::output::ScenarioFiles::new(
            &plan.output_dir,
            &scenario.slug,
            &timestamp_utc(SystemTime::now()),
        );
        run_file.scenario_started(
            i,
            output::run_file::Attempt {
                scenario_id: scenario_id.clone(),
                records_file: file_name(&files.records),
                started_at: kvbench_common::util::rfc3339_utc(SystemTime::now()),
            },
        );
        save_run_file(&run_file, plan, obs);
        let outcome = Session {
            plan,
            scenario,
            agents: &on,
            scenario_id: &scenario_id,
            dataset: inputs.dataset(i),
            tokenizer: inputs.tokenizer(i),
            cancel: &cancel,
            files: &files,
            interruption,
            output_failure: &output_failure,
        }
        .run(isolation, obs)
        .await;
        if output_failure.get().is_some() {
            // Like a coordinator killed mid-round: the attempt stays open in the run file,
            // so that --resume takes what its agents kept and runs the scenario again.
            outcomes.push(outcome);
            cancelled = true;
            break;
        }
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
        lost.extend(outcome.lost.iter().cloned());
        outcomes.push(outcome);
        if cancelled {
            break;
        }
    }
    // At the end, an agent still out of reach is waited for while it keeps its records
    // (unless the user stopped the run).
    loop {
        fetch_late(&mut lost, agents, obs).await;
        if lost.is_empty() || cancel.is_cancelled() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    for l in &lost {
        obs.on(&RunEvent::Problem(format!(
            "the run was stopped before agent {} was reached again: what it measured in round {} of {} after it was lost stays on it for its reconnect window",
            l.agent, l.round, l.scenario
        )));
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
        output_failure: output_failure.into_inner(),
    };
    obs.on(&RunEvent::RunFinished {
        plan,
        summary: &summary,
    });
    Ok(summary)
}

/// What the loop does with a scenario of the plan.
enum Next {
    /// Runs it as planned.
    Plain,
    /// A point of a search: runs it at this load.
    At(f64),
    /// A point of a search that found its boundary before it.
    NotNeeded,
}

/// Whether `scenario` is a point of a search, and at what load it runs, from the
/// scenarios that ran before it (see [`kvbench_common::sweep::next_search_load`]).
fn next_point(
    scenario: &kvbench_common::plan::Scenario,
    before: &[super::outcome::ScenarioOutcome],
) -> Next {
    let Some(point) = scenario.sweep.as_ref().filter(|p| p.search.is_some()) else {
        return Next::Plain;
    };
    let runs: Vec<kvbench_common::sweep::Run<'_>> = before
        .iter()
        .filter_map(|o| {
            Some((
                o.name.as_str(),
                o.stats.scenario.sweep.as_ref()?,
                Some(&o.stats),
            ))
        })
        .collect();
    match kvbench_common::sweep::next_search_load(point, &runs) {
        Some(load) => Next::At(load),
        None => Next::NotNeeded,
    }
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

/// Fetches what lost agents measured after they were lost (the agent keeps it for the
/// round's reconnect window) into each scenario's late-records file, from those that answer
/// now; the others are tried again before the next scenario, until their window ends.
async fn fetch_late(
    lost: &mut Vec<super::outcome::LostPart>,
    agents: &AgentSet,
    obs: &mut dyn Observer,
) {
    let now = std::time::Instant::now();
    for l in lost.iter().filter(|l| l.until <= now) {
        obs.on(&RunEvent::Problem(format!(
            "agent {} was not reached again within its reconnect window: what it measured in round {} of {} after it was lost is gone with it",
            l.agent, l.round, l.scenario
        )));
    }
    lost.retain(|l| l.until > now);
    let mut left = Vec::new();
    for l in lost.drain(..) {
        let Some(agent) = agents.all().find(|a| a.name() == l.agent) else {
            continue;
        };
        let fetch = agent.recover(&l.scenario_id, &l.scenario, l.round, l.held);
        // An agent still out of reach is tried again later, without holding the plan up.
        match tokio::time::timeout(std::time::Duration::from_secs(5), fetch).await {
            Ok(Ok(records)) => {
                match output::scenario_files::append_records(&l.late_records, &records) {
                    Ok(_) => obs.on(&RunEvent::LateRecords {
                        agent: &l.agent,
                        scenario: &l.scenario,
                        round: l.round,
                        records: records.len(),
                        file: &l.late_records,
                    }),
                    Err(e) => obs.on(&RunEvent::Problem(format!(
                        "cannot write {}: {e}",
                        l.late_records.display()
                    ))),
                }
            }
            // It no longer keeps the round (restarted, or its window ended), or its process
            // is gone and the round with it.
            Ok(Err(
                crate::agents::AgentError::NotFound { .. } | crate::agents::AgentError::Gone { .. },
            )) => {}
            _ => left.push(l),
        }
    }
    *lost = left;
}

/// A file's name, as the run file keeps it.
fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What the interrupted attempt of a scenario left: its agents asked for what they kept
/// of it (appended to its records file), then told in one sentence for its stats.
async fn interrupted(
    plan: &Plan,
    scenario: &kvbench_common::plan::Scenario,
    attempt: &output::run_file::Attempt,
    status: Option<kvbench_common::results::ScenarioStatus>,
    agents: &[&AgentClient],
    obs: &mut dyn Observer,
) -> String {
    let how = match status {
        Some(s) => format!("was {s}"),
        None => "was interrupted (the coordinator went away)".to_owned(),
    };
    let records = plan.output_dir.join(&attempt.records_file);
    // A stopped attempt's records are in its results file; an interrupted one's spool may
    // not exist yet (killed before its first record), while its agents measured on.
    if status == Some(kvbench_common::results::ScenarioStatus::Cancelled) {
        return format!(
            "an earlier attempt started at {} {how}; the run was resumed and this is the attempt that counts (the earlier one's files are beside it)",
            attempt.started_at
        );
    }
    match super::resume::recover(attempt, &plan.output_dir, &scenario.name, scenario.rounds, agents).await {
        Ok(r) => format!(
            "an earlier attempt started at {} {how}; the run was resumed and this is the attempt that counts. The earlier attempt's {} records ({} of them fetched from its agents after the interruption) are in {}, outside these statistics",
            attempt.started_at, r.total, r.fetched, attempt.records_file
        ),
        Err(e) => {
            obs.on(&RunEvent::Problem(format!(
                "cannot add the interrupted attempt's last records to {}: {e}",
                records.display()
            )));
            format!(
                "an earlier attempt started at {} {how}; the run was resumed and this is the attempt that counts. The earlier attempt's records are in {}, outside these statistics",
                attempt.started_at, attempt.records_file
            )
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
