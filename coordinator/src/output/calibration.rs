//! The latest `kvbench calibrate` of this host, kept outside any run's folder, so that the
//! reports of runs on this host say how far the harness itself can be trusted.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The latest calibration of this host, kept where `kvbench run` finds it
/// (`$XDG_CACHE_HOME/kvbench/calibration.json`, else `~/.cache/kvbench/...`), so that the
/// reports of runs on this host say how far the harness itself can be trusted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub hostname: String,
    /// When it was measured (RFC 3339, UTC).
    pub at: String,
    pub kvbench_version: String,
    /// One sentence from the figures.
    pub verdict: String,
}

impl Record {
    /// Where it is kept.
    pub fn path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("kvbench").join("calibration.json"))
    }

    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = Record::path().context("neither XDG_CACHE_HOME nor HOME is set")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// This host's latest calibration, when there is one.
    pub fn of_this_host() -> Option<Record> {
        let text = std::fs::read_to_string(Record::path()?).ok()?;
        let r: Record = serde_json::from_str(&text).ok()?;
        (r.hostname == kvbench_common::util::hostname()).then_some(r)
    }
}
