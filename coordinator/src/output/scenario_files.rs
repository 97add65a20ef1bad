//! The result files of a scenario, with the seed's names: `<slug>_stats_<ts>.json`,
//! `<slug>_results_<ts>.json` (every record) and `<slug>_telemetry_<ts>.jsonl` (one sample
//! per line, appended round by round). Records go to `<slug>_records_<ts>.jsonl` as they
//! arrive ([`RecordSpool`]), never all held in memory; the results file is copied from it
//! at the scenario's end, and it is removed then (a run that dies leaves it, with every
//! record measured). JSON files are written through a temporary file and a rename, so that
//! a reader never sees half a file.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kvbench_common::record::RequestRecord;
use kvbench_common::results::ScenarioStats;
use kvbench_common::telemetry::TelemetrySample;
use serde::Serialize;

/// Where one scenario's files go.
#[derive(Debug, Clone)]
pub struct ScenarioFiles {
    pub stats: PathBuf,
    pub results: PathBuf,
    pub telemetry: PathBuf,
    /// The records as they arrive (until the results file holds them).
    pub records: PathBuf,
}

impl ScenarioFiles {
    /// Records an agent lost during a round measured after it was lost, fetched when the
    /// run reached it again (`<slug>_late_records_<ts>.jsonl`).
    pub fn late_records(&self) -> PathBuf {
        let name = self
            .records
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .replacen("_records_", "_late_records_", 1)
            })
            .unwrap_or_default();
        self.records.with_file_name(name)
    }

    /// The files of scenario `slug` in `dir`, named with the scenario's timestamp.
    pub fn new(dir: &Path, slug: &str, ts: &str) -> ScenarioFiles {
        ScenarioFiles {
            stats: dir.join(format!("{slug}_stats_{ts}.json")),
            results: dir.join(format!("{slug}_results_{ts}.json")),
            telemetry: dir.join(format!("{slug}_telemetry_{ts}.jsonl")),
            records: dir.join(format!("{slug}_records_{ts}.jsonl")),
        }
    }
}

/// Records that cannot be written to the spool (the results file then cannot be written;
/// the figures can).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot write records to {}: {message}", .path.display())]
pub struct SpoolError {
    pub path: PathBuf,
    pub message: String,
}

/// A scenario's records on disk as they arrive, one JSON object per line (the file is
/// created with the first record). Records of an attempt set aside (`clear_or_restart` ran
/// the scenario again) stay in it, before the line where the new attempt begins.
#[derive(Debug)]
pub struct RecordSpool {
    path: PathBuf,
    /// Each record is handed to the kernel as one write when it arrives (a coordinator
    /// that is killed loses none it received).
    out: Option<File>,
    line: Vec<u8>,
    lines: u64,
    /// Bytes of whole records in the file: a write that fails is cut back to it.
    bytes: u64,
    set_aside: u64,
    error: Option<String>,
}

impl RecordSpool {
    pub fn new(path: PathBuf) -> RecordSpool {
        RecordSpool {
            path,
            out: None,
            line: Vec::new(),
            lines: 0,
            bytes: 0,
            set_aside: 0,
            error: None,
        }
    }

    /// Appends a record. The first failure is returned once and kept (the results file
    /// then cannot be written); later records are dropped without another word. A record
    /// the disk took only part of is cut off again: the file holds whole records only, and
    /// stays readable (and resumable) up to the failure.
    pub fn append(&mut self, r: &RequestRecord) -> Result<(), SpoolError> {
        if self.error.is_some() {
            return Ok(());
        }
        match self.write(r) {
            Ok(()) => {
                self.lines += 1;
                Ok(())
            }
            Err(e) => {
                let e = SpoolError {
                    path: self.path.clone(),
                    message: e.to_string(),
                };
                self.error = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn write(&mut self, r: &RequestRecord) -> std::io::Result<()> {
        if self.out.is_none() {
            self.out = Some(File::create(&self.path)?);
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, r)?;
        self.line.push(b'\n');
        if let Some(f) = &mut self.out {
            if let Err(e) = f.write_all(&self.line) {
                let _ = f.set_len(self.bytes);
                return Err(e);
            }
            self.bytes += self.line.len() as u64;
        }
        Ok(())
    }

    /// The records so far belong to an attempt set aside.
    pub fn set_aside(&mut self) {
        self.set_aside = self.lines;
    }

    /// Records of the scenario (those set aside not counted).
    pub fn kept(&self) -> u64 {
        self.lines - self.set_aside
    }

    /// The kept records, read back from disk one at a time; reading stops at the first
    /// error (logged).
    pub fn read_kept(&self) -> impl Iterator<Item = RequestRecord> {
        let lines = match self.lines_of(self.set_aside..self.lines) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot read the records back");
                None
            }
        };
        lines.into_iter().flatten().map_while(|l| {
            l.and_then(|l| serde_json::from_str::<RequestRecord>(&l).map_err(anyhow::Error::from))
                .map_err(|e| tracing::warn!(error = %format!("{e:#}"), "cannot read a record back"))
                .ok()
        })
    }

    /// The lines in `range` (0-based), as they are in the file.
    fn lines_of(
        &self,
        range: Range<u64>,
    ) -> anyhow::Result<impl Iterator<Item = anyhow::Result<String>>> {
        let file = if self.lines == 0 {
            None
        } else {
            Some(
                File::open(&self.path)
                    .with_context(|| format!("cannot read {}", self.path.display()))?,
            )
        };
        let lines = file.into_iter().flat_map(|f| BufReader::new(f).lines());
        Ok(lines
            .take(range.end as usize)
            .skip(range.start as usize)
            .map(|l| l.map_err(anyhow::Error::from)))
    }

    /// Writes the lines in `range` as the elements of a JSON array.
    fn copy_array(&self, w: &mut impl Write, range: Range<u64>) -> anyhow::Result<()> {
        w.write_all(b"[")?;
        let mut first = true;
        for line in self.lines_of(range)? {
            w.write_all(if first { b"\n    " } else { b",\n    " })?;
            w.write_all(line?.as_bytes())?;
            first = false;
        }
        w.write_all(if first { b"]" } else { b"\n  ]" })?;
        Ok(())
    }

    /// Removes the file (the results file holds its records now).
    fn remove(&mut self) {
        self.out = None;
        if self.lines > 0 {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes the stats file, then the results file from the spool (which is then removed).
pub fn write_scenario(
    files: &ScenarioFiles,
    stats: &ScenarioStats,
    spool: &mut RecordSpool,
) -> anyhow::Result<()> {
    write_json(&files.stats, stats)?;
    if let Some(e) = &spool.error {
        anyhow::bail!("{e}");
    }
    let tmp = files.results.with_extension("json.tmp");
    let mut w = BufWriter::new(
        File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?,
    );
    write!(
        w,
        "{{\n  \"kvbench_version\": {},\n  \"scenario\": {},\n  \"records\": ",
        serde_json::to_string(env!("CARGO_PKG_VERSION"))?,
        serde_json::to_string(&stats.scenario)?,
    )?;
    spool.copy_array(&mut w, spool.set_aside..spool.lines)?;
    if spool.set_aside > 0 {
        // Round 1 of an attempt set aside because it was not cold (see the stats'
        // `isolation.rerun_after`).
        w.write_all(b",\n  \"discarded_records\": ")?;
        spool.copy_array(&mut w, 0..spool.set_aside)?;
    }
    w.write_all(b"\n}\n")?;
    w.flush()
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(w);
    std::fs::rename(&tmp, &files.results)
        .with_context(|| format!("cannot rename to {}", files.results.display()))?;
    spool.remove();
    Ok(())
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

/// Creates the output folder (and its parents) when it is not there.
pub fn create_output_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output folder {}", dir.display()))
}

/// The last sequence number a record spool holds, per (agent, round), after cutting a last
/// line a kill left unfinished (its record is asked for again).
pub fn spooled_seqs(
    path: &Path,
) -> std::io::Result<std::collections::BTreeMap<(String, u32), u64>> {
    let mut held = std::collections::BTreeMap::new();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(held),
        Err(e) => return Err(e),
    };
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(keep as u64)?;
    }
    for line in bytes.split(|b| *b == b'\n') {
        let Ok(r) = serde_json::from_slice::<RequestRecord>(line) else {
            continue;
        };
        if let Some(seq) = r.seq {
            let e = held.entry((r.agent, r.round)).or_insert(0);
            *e = (*e).max(seq);
        }
    }
    Ok(held)
}

/// Appends records to a record spool (synced); how many records it holds then.
pub fn append_records(path: &Path, records: &[RequestRecord]) -> std::io::Result<usize> {
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    for r in records {
        let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        line.push(b'\n');
        out.write_all(&line)?;
    }
    out.sync_all()?;
    Ok(std::fs::read(path)?
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count())
}
