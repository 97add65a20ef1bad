//! The result contract, written and read in one place: file names, each scenario's stats,
//! results and telemetry files, the record spool, the run file, reading a run back
//! ([`SavedRun`], records, samples), the latest run of a folder, and this host's
//! calibration record.
//!
//! May import: `kvbench_common` and std only. Never the engine, the presenters or the CLI:
//! everything else reads and writes results through here.

pub mod calibration;
pub mod run_file;
pub mod saved;
pub mod scenario_files;

pub use run_file::{latest_run, run_agent, sha256_file, RunFile, RunState};
pub use saved::{NoStats, SavedRun};
pub use scenario_files::{check_output_dir, create_output_dir, RecordSpool, ScenarioFiles};
