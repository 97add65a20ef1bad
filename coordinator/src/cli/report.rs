//! `kvbench report RUN_DIR`: writes a run's reports again from its saved files (and its
//! CSV with `--csv`); exit 0 with the report's path, 1 when it cannot be written.

use std::path::Path;
use std::process::ExitCode;

use crate::output::{self, SavedRun};
use crate::present::report;

/// `kvbench report RUN_DIR`: exit 0 with the report's path, 1 when it cannot be written.
pub fn command(
    dir: &Path,
    run: Option<&str>,
    font: Option<&Path>,
    csv: bool,
) -> anyhow::Result<ExitCode> {
    let run_file = match run {
        Some(ts) => dir.join(format!("multi_scenario_run_{ts}.json")),
        None => match output::latest_run(dir) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e:#}");
                return Ok(ExitCode::from(1));
            }
        },
    };
    match report::write(dir, &run_file, font) {
        Ok(w) => {
            if let Some(warning) = w.glyph_warning() {
                eprintln!("warning: {warning}");
            }
            outln!("Report: {}", w.report.display());
            outln!("HTML report: {}", w.html.display());
            outln!("Charts: {}", dir.join(&w.charts.folder).display());
            if csv {
                let written = SavedRun::read(dir, &run_file)
                    .and_then(|saved| report::csv::write(dir, &saved));
                match written {
                    Ok(path) => outln!("CSV: {}", path.display()),
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        return Ok(ExitCode::from(1));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}
