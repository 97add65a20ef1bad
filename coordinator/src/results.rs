//! The result files of a scenario, with the seed's names: `<slug>_stats_<ts>.json`,
//! `<slug>_results_<ts>.json` (every record) and `<slug>_telemetry_<ts>.jsonl` (one sample
//! per line, appended round by round). JSON files are written through a temporary file and
//! a rename, so that a reader never sees half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kvbench_common::record::RequestRecord;
use kvbench_common::stats::{ScenarioInfo, ScenarioStats};
use kvbench_common::telemetry::TelemetrySample;
use serde::Serialize;

/// Where one scenario's files go.
#[derive(Debug, Clone)]
pub struct ScenarioFiles {
    pub stats: PathBuf,
    pub results: PathBuf,
    pub telemetry: PathBuf,
}

impl ScenarioFiles {
    /// The files of scenario `slug` in `dir`, named with the scenario's timestamp.
    pub fn new(dir: &Path, slug: &str, ts: &str) -> ScenarioFiles {
        ScenarioFiles {
            stats: dir.join(format!("{slug}_stats_{ts}.json")),
            results: dir.join(format!("{slug}_results_{ts}.json")),
            telemetry: dir.join(format!("{slug}_telemetry_{ts}.jsonl")),
        }
    }
}

#[derive(Serialize)]
struct ResultsFile<'a> {
    kvbench_version: &'a str,
    scenario: &'a ScenarioInfo,
    records: &'a [RequestRecord],
    /// Round 1 of an attempt set aside because it was not cold (see the stats'
    /// `isolation.rerun_after`).
    #[serde(skip_serializing_if = "<[RequestRecord]>::is_empty")]
    discarded_records: &'a [RequestRecord],
}

/// Writes the stats and results files.
pub fn write_scenario(
    files: &ScenarioFiles,
    stats: &ScenarioStats,
    records: &[RequestRecord],
    discarded_records: &[RequestRecord],
) -> anyhow::Result<()> {
    write_json(&files.stats, stats)?;
    write_json(
        &files.results,
        &ResultsFile {
            kvbench_version: env!("CARGO_PKG_VERSION"),
            scenario: &stats.scenario,
            records,
            discarded_records,
        },
    )
}

/// Appends samples to a JSON Lines file, one sample per line.
pub fn append_jsonl(path: &Path, samples: &[TelemetrySample]) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for sample in samples {
        serde_json::to_writer(&mut w, sample)?;
        w.write_all(b"\n")?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

/// Checks that the output folder can be created and written, before anything runs.
pub fn check_output_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the output folder {}", dir.display()))?;
    let probe = tempfile::Builder::new()
        .prefix(".kvbench-write-check")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in the output folder {}", dir.display()))?;
    drop(probe);
    Ok(())
}
