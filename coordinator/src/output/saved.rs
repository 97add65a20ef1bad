//! Reading a run back from its folder: the run file and each scenario's stats
//! ([`SavedRun`]), its records and its telemetry samples. The report, the CSV, the charts
//! and `kvbench compare` read through here alone.

use std::path::{Path, PathBuf};

use kvbench_common::record::Outcome;
use kvbench_common::results::{ScenarioStats, ScenarioStatus};
use kvbench_common::telemetry::TelemetrySample;
use serde::Deserialize;

use super::run_file::RunFile;

/// A run and its scenarios' stats, read from the run's folder (a stats file that is
/// missing or unreadable is reported in place of the scenario's figures).
#[derive(Debug, Clone)]
pub struct SavedRun {
    pub run: RunFile,
    pub stats: Vec<Result<ScenarioStats, NoStats>>,
}

/// Why a scenario of a saved run has no figures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NoStats {
    #[error("not run")]
    NotRun,
    /// A point of a `search:` the search did not need.
    #[error("not needed by its search")]
    NotNeeded,
    #[error("{0}: no stats file was written")]
    NotWritten(ScenarioStatus),
    #[error("cannot read {path}: {error}")]
    Unreadable { path: String, error: String },
    #[error("{path}: {error}")]
    Invalid { path: String, error: String },
}

/// A results or telemetry file of a run that cannot be read (named by its file name alone:
/// a report reads the same from a copied folder).
#[derive(Debug, thiserror::Error)]
pub enum SavedFileError {
    #[error("cannot read {name}: {source}")]
    Unreadable {
        name: String,
        source: std::io::Error,
    },
    #[error("{name} is not a results file: {source}")]
    NotResults {
        name: String,
        source: serde_json::Error,
    },
    #[error("{name}:{line}: not a telemetry sample: {source}")]
    NotSample {
        name: String,
        line: usize,
        source: serde_json::Error,
    },
}

impl SavedRun {
    pub fn read(dir: &Path, run_file: &Path) -> anyhow::Result<SavedRun> {
        let run = RunFile::load(run_file)?;
        let stats = run
            .scenarios
            .iter()
            .map(|s| {
                let Some(name) = &s.stats_file else {
                    return Err(match s.status {
                        None if s.not_needed => NoStats::NotNeeded,
                        None => NoStats::NotRun,
                        Some(st) => NoStats::NotWritten(st),
                    });
                };
                let path = dir.join(name);
                let text = std::fs::read_to_string(&path).map_err(|e| NoStats::Unreadable {
                    path: path.display().to_string(),
                    error: e.to_string(),
                })?;
                serde_json::from_str(&text).map_err(|e| NoStats::Invalid {
                    path: path.display().to_string(),
                    error: e.to_string(),
                })
            })
            .collect();
        Ok(SavedRun { run, stats })
    }
}

/// The fields of a saved record that the charts, the drill-down and `kvbench compare` read
/// (the rest of the results file is skipped).
#[derive(Debug, Deserialize)]
pub struct SavedRecord {
    pub round: u32,
    #[serde(default)]
    pub warmup: bool,
    pub sent_ms: f64,
    pub first_token_ms: Option<f64>,
    pub outcome: Outcome,
    #[serde(default)]
    pub request_id: u32,
    #[serde(default)]
    pub conversation_id: u32,
    #[serde(default)]
    pub turn: u32,
    #[serde(default)]
    pub queue_ms: f64,
    pub end_ms: f64,
    #[serde(default)]
    pub prompt_tokens_client: u32,
    #[serde(default)]
    pub prompt_tokens: Option<u32>,
    #[serde(default)]
    pub cached_tokens: Option<u32>,
    #[serde(default)]
    pub output_tokens: Option<u32>,
    #[serde(default)]
    pub retried: bool,
    #[serde(default)]
    pub error: String,
}

#[derive(Debug, Deserialize)]
struct ResultsFile {
    records: Vec<SavedRecord>,
}

/// The newest stats file of scenario `slug` in `dir` (their names sort by time), read;
/// none when there is none or it cannot be read.
pub fn latest_stats(dir: &Path, slug: &str) -> Option<(PathBuf, ScenarioStats)> {
    let prefix = format!("{slug}_stats_");
    let latest = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".json"))
        })
        .max()?;
    let stats = serde_json::from_slice(&std::fs::read(&latest).ok()?).ok()?;
    Some((latest, stats))
}

/// The records of the results file `name` in `dir`.
pub fn read_records(dir: &Path, name: &str) -> Result<Vec<SavedRecord>, SavedFileError> {
    let file =
        std::fs::File::open(dir.join(name)).map_err(|source| SavedFileError::Unreadable {
            name: name.to_owned(),
            source,
        })?;
    let results: ResultsFile =
        serde_json::from_reader(std::io::BufReader::new(file)).map_err(|source| {
            SavedFileError::NotResults {
                name: name.to_owned(),
                source,
            }
        })?;
    Ok(results.records)
}

/// The telemetry samples of the JSON Lines file `name` in `dir`.
pub fn read_samples(dir: &Path, name: &str) -> Result<Vec<TelemetrySample>, SavedFileError> {
    let text =
        std::fs::read_to_string(dir.join(name)).map_err(|source| SavedFileError::Unreadable {
            name: name.to_owned(),
            source,
        })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| SavedFileError::NotSample {
                name: name.to_owned(),
                line: i + 1,
                source,
            })
        })
        .collect()
}
