//! `kvbench run --resume RUN_DIR`: the run file of an interrupted run says which scenarios
//! ended (kept as they are, byte for byte) and which did not (rerun from their isolation
//! step); the files the run read must be those it read then (SHA-256); and the records an
//! interrupted round's agents measured after the coordinator went away are fetched from
//! them (while they keep them) into that attempt's records file, so that nothing measured
//! is lost.

use std::path::{Path, PathBuf};

use kvbench_common::results::{ScenarioStats, ScenarioStatus};

use super::outcome::ScenarioOutcome;
use crate::agents::AgentClient;
use crate::output::run_file::{Attempt, RunFile, RunState};

/// Why a run cannot be resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeRefused {
    #[error("{dir}: no run to resume ({message})")]
    NoRun { dir: PathBuf, message: String },
    #[error("{path}: the run finished at {at}: there is nothing to resume")]
    Finished { path: PathBuf, at: String },
    /// A file the run read is not what it was (each one named).
    #[error("{path}: the {role} changed since the run started (SHA-256 {was} then, {now} now): --resume runs the plan as it was; restore the file, or start a new run")]
    Changed {
        path: String,
        role: String,
        was: String,
        now: String,
    },
    #[error("{path}: the {role} the run read cannot be read now: --resume needs it as it was")]
    Gone { path: String, role: String },
}

/// The run file of `dir` to resume, or why not.
pub fn run_to_resume(dir: &Path) -> Result<(PathBuf, RunFile), ResumeRefused> {
    let no_run = |e: anyhow::Error| ResumeRefused::NoRun {
        dir: dir.to_owned(),
        message: format!("{e:#}"),
    };
    let path = crate::output::latest_run(dir).map_err(no_run)?;
    let run = RunFile::load(&path).map_err(no_run)?;
    if run.state == RunState::Finished {
        return Err(ResumeRefused::Finished {
            at: run.finished_at.clone().unwrap_or_default(),
            path,
        });
    }
    Ok((path, run))
}

/// Every file the run read whose SHA-256 is not the one it recorded.
pub fn changed_files(run: &RunFile) -> Vec<ResumeRefused> {
    let short = |h: &str| h.chars().take(12).collect::<String>();
    run.provenance
        .files
        .iter()
        .filter_map(|f| {
            let now = crate::output::sha256_file(Path::new(&f.path));
            match (&f.sha256, now) {
                (Some(was), Some(now)) if *was != now => Some(ResumeRefused::Changed {
                    path: f.path.clone(),
                    role: f.role.clone(),
                    was: short(was),
                    now: short(&now),
                }),
                (Some(_), None) => Some(ResumeRefused::Gone {
                    path: f.path.clone(),
                    role: f.role.clone(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// Whether the run's `i`-th scenario ended (it is kept, not run again).
pub fn ended(status: Option<ScenarioStatus>) -> bool {
    matches!(
        status,
        Some(
            ScenarioStatus::Completed
                | ScenarioStatus::Degraded
                | ScenarioStatus::Failed
                | ScenarioStatus::Partial
        )
    )
}

/// A scenario that ended before the run was interrupted, as its stats file says.
pub fn kept_outcome(run: &RunFile, i: usize, dir: &Path) -> Option<ScenarioOutcome> {
    let s = run.scenarios.get(i)?;
    if !ended(s.status) {
        return None;
    }
    let path = |f: &Option<String>| f.as_ref().map(|f| dir.join(f));
    let stats_path = path(&s.stats_file);
    let stats: Option<ScenarioStats> = stats_path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok());
    let stats = stats?;
    Some(ScenarioOutcome {
        name: s.name.clone(),
        records: stats
            .rounds
            .iter()
            .map(|r| (r.completed + r.failed) as usize)
            .sum(),
        stats,
        stats_path,
        results_path: path(&s.results_file),
        telemetry_path: path(&s.telemetry_file),
        lost: Vec::new(),
    })
}

/// What the interrupted attempt of a scenario left, once its agents gave what they kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Records fetched from the agents and appended to the attempt's records file.
    pub fetched: usize,
    /// Records in that file now.
    pub total: usize,
}

/// Asks each agent of an interrupted attempt to stop its rounds and hand over the records
/// after the last one the attempt's records file holds; appends them to that file. A
/// record cut short by the kill at the file's end is dropped (the agent sends it again).
pub async fn recover(
    attempt: &Attempt,
    dir: &Path,
    scenario: &str,
    rounds: u32,
    agents: &[&AgentClient],
) -> std::io::Result<Recovered> {
    let path = dir.join(&attempt.records_file);
    let held = crate::output::scenario_files::spooled_seqs(&path)?;
    let mut fetched = Vec::new();
    for agent in agents {
        for round in 1..=rounds {
            let after = held
                .get(&(agent.name().to_owned(), round))
                .copied()
                .unwrap_or(0);
            match agent
                .recover(&attempt.scenario_id, scenario, round, after)
                .await
            {
                Ok(records) => fetched.extend(records),
                Err(e) => tracing::info!(agent = agent.name(), round, "nothing to recover: {e}"),
            }
        }
    }
    let total = crate::output::scenario_files::append_records(&path, &fetched)?;
    Ok(Recovered {
        fetched: fetched.len(),
        total,
    })
}
