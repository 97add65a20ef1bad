//! The run's report: `multi_scenario_report_<ts>.md` in the output folder, written at the
//! end of every run (an interrupted one, or one whose scenarios failed, included) and
//! rewritten by `kvbench report RUN_DIR` from the saved files alone ([`crate::output`]
//! reads them). Charts are drawn and files written synchronously: async callers run
//! [`write()`] on a blocking thread.
//!
//! - [`markdown`]: the report's text; [`views`]: its baselines, pivots and repeats;
//!   [`capacity`]: the capacity of swept scenarios at their objectives;
//! - [`html`]: the same report as one self-contained page; [`csv`]: figures in long form;
//! - [`charts`]: the five bar and radar charts; [`timeline`]: distributions and the run's
//!   timeline from records and samples.
//!
//! May import: `kvbench_common` and [`crate::output`] (saved runs, records, samples).

pub mod capacity;
pub mod charts;
pub mod csv;
pub mod efficiency;
pub mod html;
pub mod markdown;
pub mod timeline;
pub mod views;

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::output::SavedRun;

/// What writing a report produced.
#[derive(Debug, Clone)]
pub struct Written {
    pub report: PathBuf,
    /// `report.html`, the same report as one page.
    pub html: PathBuf,
    pub charts: charts::Charts,
}

impl Written {
    /// Said once when a label has characters the charts' font lacks.
    pub fn glyph_warning(&self) -> Option<String> {
        let missing = &self.charts.missing_glyphs;
        (!missing.is_empty()).then(|| {
            let shown: String = missing.iter().take(20).collect();
            format!(
                "the charts' font has no glyph for {} character(s) of their labels ({shown}{}): they show as boxes; draw with a font that has them: kvbench report RUN_DIR --font PATH",
                missing.len(),
                if missing.len() > 20 { "..." } else { "" }
            )
        })
    }
}

/// Writes the charts and the markdown report of the run whose file is `run_file` in `dir`
/// (charts drawn with the font at `font`, else the bundled one).
pub fn write(dir: &Path, run_file: &Path, font: Option<&Path>) -> anyhow::Result<Written> {
    let saved = SavedRun::read(dir, run_file)?;
    let charts = charts::draw(&saved, dir, font)?;
    let path = saved.run.report_path(dir);
    let text = markdown::render(&saved, Some(&charts));
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    let html = dir.join("report.html");
    std::fs::write(&html, html::render(&saved, &text, &charts, dir))
        .with_context(|| format!("cannot write {}", html.display()))?;
    Ok(Written {
        report: path,
        html,
        charts,
    })
}
