//! The command line: one file per command. Each reads its arguments, calls the engine
//! (or the presenters, for commands over saved runs), hands what came back to a printer,
//! and decides the exit status: this layer alone prints to stdout directly and alone
//! decides exit codes.
//!
//! May import: every layer below it (`engine`, `agents`, `output`, `present`).

/// `println!` for the CLI's own commands that never panics: a closed stdout
/// (`kvbench workload inspect --json | head`) is not an error.
macro_rules! outln {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod agents;
pub mod calibrate;
pub mod certs;
pub mod compare;
pub mod inspect;
pub mod report;
pub mod run;
pub mod scale;
pub mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kvbench_common::plan::{self, Plan};

use crate::engine::inputs::Inputs;

/// kvbench: what KV-cache reuse really buys an LLM deployment, scenario by scenario.
#[derive(Debug, Parser)]
#[command(name = "kvbench", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a plan (the seed's multi_scenario_config.yaml): every scenario, round by round.
    Run {
        /// The plan file (not with --resume: the run's own).
        #[arg(required_unless_present = "resume")]
        plan: Option<PathBuf>,
        /// Resume the interrupted run in this folder (its newest run file): scenarios that
        /// ended are kept as they are, the others run from their isolation step; refused
        /// when a file the run read (plan, config, dataset, tokenizer) changed since.
        #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["plan", "output_dir", "only"])]
        resume: Option<PathBuf>,
        /// Write results here instead of the plan's output_dir.
        #[arg(long)]
        output_dir: Option<PathBuf>,
        /// Stream the run's events to stdout as JSON Lines (one object per event, with an
        /// `event` field); the console's text goes to stderr instead.
        #[arg(long)]
        json: bool,
        /// Run the scenarios of the agents that answer, leaving out those of agents that
        /// do not (by default an unreachable agent stops the plan before anything runs).
        #[arg(long)]
        skip_unreachable: bool,
        /// Run only these scenarios (comma-separated names; a scenario placed on several
        /// agents by its plan name, or one of them as NAME@AGENT), into the same output
        /// folder with new timestamps.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Reach every agent of a plan's `agents:` and show what each is (exit 1 when one
    /// cannot be reached or speaks another protocol version).
    Agents {
        /// The plan file.
        plan: PathBuf,
    },
    /// Write a run's report again from its saved files (multi_scenario_report_<ts>.md).
    Report {
        /// The run's output folder.
        run_dir: PathBuf,
        /// Which run, by the <ts> of its multi_scenario_run_<ts>.json (default: the newest).
        #[arg(long)]
        run: Option<String>,
        /// Draw the charts' text with this font file (TrueType or OpenType) instead of the
        /// bundled one (Latin and common Chinese).
        #[arg(long)]
        font: Option<PathBuf>,
        /// Also write the per-round statistics in long form to
        /// multi_scenario_stats_<ts>.csv (run, agent, scenario, round, repeat, metric,
        /// statistic, value, unit).
        #[arg(long)]
        csv: bool,
    },
    /// What changed from run A to run B, scenario by scenario, with confidence intervals.
    Compare(compare::CompareArgs),
    /// Check a plan and every config file it names, without running anything.
    Validate {
        /// The plan file.
        plan: PathBuf,
    },
    /// Measure the harness's own overhead on this machine against a fixed-latency sim.
    Calibrate(calibrate::CalibrateArgs),
    /// Measure whether one coordinator keeps up with many agents streaming records.
    Scale(scale::ScaleArgs),
    /// Certificates and a token for TLS between the coordinator and its agents.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Look at workloads without sending anything.
    #[command(subcommand)]
    Workload(WorkloadCommand),
    /// Serve kvbench-sim from this binary (used by `calibrate`).
    #[command(name = "internal-sim", hide = true)]
    InternalSim(kvbench_sim::ServeArgs),
    /// Serve kvbench-agent from this binary (used by `calibrate`).
    #[command(name = "internal-agent", hide = true)]
    InternalAgent(kvbench_agent::ServeArgs),
}

#[derive(Debug, Subcommand)]
pub enum WorkloadCommand {
    /// Request count, length distributions, distinct prefixes and the hit ratio a perfect
    /// prefix cache would give rounds 1 and 2.
    Inspect(inspect::InspectArgs),
}

/// Exit status when some scenario failed (or was cancelled), the others still ran.
pub const EXIT_SCENARIO_FAILED: u8 = 1;
/// Exit status for a plan that does not validate (nothing ran).
pub const EXIT_BAD_PLAN: u8 = 2;
/// Exit status when every scenario ran but some failed more requests than `max_error_rate`.
pub const EXIT_DEGRADED: u8 = 3;
/// Exit status when every scenario ran but some round 1 was not a cold start.
pub const EXIT_NOT_COLD: u8 = 4;
/// Exit status when records could not be written (a full disk): the run stopped, resumable.
pub const EXIT_OUTPUT_FAILED: u8 = 5;
/// Exit status when the user interrupted the run (SIGINT, Ctrl-C).
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit status when the run was told to stop (SIGTERM, e.g. `timeout`).
pub const EXIT_TERMINATED: u8 = 143;
/// Exit status when the run's terminal went away (SIGHUP).
pub const EXIT_HANGUP: u8 = 129;

/// Loads a plan and everything it reads (agent config, datasets, tokenizers), printing
/// every problem on stderr.
pub fn load_plan(path: &Path) -> Result<(Plan, Inputs), ExitCode> {
    plan::load(path)
        .and_then(|p| crate::agents::agent_file(&p).map(|_| p))
        .and_then(|p| Inputs::load(&p).map(|i| (p, i)))
        .map_err(|errs| {
            for e in &errs.0 {
                eprintln!("error: {e}");
            }
            eprintln!(
                "kvbench: the plan has {} problem{}; nothing was run",
                errs.0.len(),
                if errs.0.len() == 1 { "" } else { "s" }
            );
            ExitCode::from(EXIT_BAD_PLAN)
        })
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Workload(WorkloadCommand::Inspect(args)) => {
            inspect::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Calibrate(args) => {
            calibrate::run(&args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Scale(args) => {
            let report = scale::run(&args).await?;
            // Nothing lost is the benchmark's first claim.
            let lost = report.runs.iter().any(|r| r.sent != r.received);
            Ok(if lost {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::InternalSim(args) => {
            kvbench_sim::serve_until_signal(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::InternalAgent(args) => {
            kvbench_agent::serve_until_signal(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agents { plan } => agents::command(&plan).await,
        Command::Certs(c) => certs::command(&c),
        Command::Validate { plan } => validate::command(&plan).await,
        Command::Compare(args) => {
            Ok(tokio::task::spawn_blocking(move || compare::command(&args)).await?)
        }
        Command::Report {
            run_dir,
            run,
            font,
            csv,
        } => {
            // Charts are drawn on the CPU: off the async workers.
            tokio::task::spawn_blocking(move || {
                report::command(&run_dir, run.as_deref(), font.as_deref(), csv)
            })
            .await?
        }
        Command::Run {
            plan,
            resume,
            output_dir,
            json,
            skip_unreachable,
            only,
        } => {
            run::command(run::RunOptions {
                plan: match resume {
                    Some(dir) => run::PlanSource::Resume(dir),
                    None => run::PlanSource::File(plan.unwrap_or_default()),
                },
                output_dir,
                json,
                skip_unreachable,
                only,
            })
            .await
        }
    }
}
