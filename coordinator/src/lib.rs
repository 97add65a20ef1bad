//! `kvbench`, the coordinator: loads a plan, connects to agents (or starts the embedded
//! default), runs scenarios in order with isolation between them, and writes the results.

pub mod agent_client;
pub mod agents;
pub mod calibrate;
pub mod inspect;
pub mod runner;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kvbench_common::plan::{self, Endpoint, Plan};
use kvbench_sim::SimConfig;
use tokio_util::sync::CancellationToken;

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
        /// The plan file.
        plan: PathBuf,
        /// Write results here instead of the plan's output_dir.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Check a plan and every config file it names, without running anything.
    Validate {
        /// The plan file.
        plan: PathBuf,
    },
    /// Measure the harness's own overhead on this machine against a fixed-latency sim.
    Calibrate(calibrate::CalibrateArgs),
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

/// Exit status for a plan that does not validate.
pub const EXIT_BAD_PLAN: u8 = 2;
/// Exit status when some scenario failed.
pub const EXIT_SCENARIO_FAILED: u8 = 1;
/// Exit status when the user interrupted the run.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Loads a plan, printing every problem on stderr.
pub fn load_plan(path: &Path) -> Result<Plan, ExitCode> {
    plan::load(path)
        .and_then(|p| agents::agent_file(&p).map(|_| p))
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
        Command::InternalSim(args) => {
            kvbench_sim::serve_until_signal(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::InternalAgent(args) => {
            kvbench_agent::serve_until_signal(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { plan } => {
            let p = match load_plan(&plan) {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            println!("{}: OK, {} scenarios", plan.display(), p.scenarios.len());
            for s in &p.scenarios {
                println!(
                    "  - {} [{}] {} rounds, concurrency {}, {} requests, endpoint {} ({})",
                    s.name,
                    s.kind,
                    s.rounds,
                    s.concurrency,
                    s.config.workload.num_requests,
                    s.config.endpoint,
                    s.config_file
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { plan, output_dir } => {
            let mut p = match load_plan(&plan) {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            if let Some(dir) = output_dir {
                p.output_dir = dir;
            }
            let cancel = CancellationToken::new();
            let c = cancel.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("\nInterrupted: stopping the load and writing what was measured (Ctrl-C again to quit now)");
                    c.cancel();
                    if tokio::signal::ctrl_c().await.is_ok() {
                        std::process::exit(i32::from(EXIT_INTERRUPTED));
                    }
                }
            });
            let embedded = agents::Embedded::start(&p, SimConfig::default()).await?;
            let result = runner::run_plan(&p, &embedded.by_endpoint, cancel).await;
            if let Some(sim) = &embedded.sim {
                let c = sim.engine.counters();
                tracing::debug!(served = c.requests_received, "embedded sim");
            }
            let uses_sim = p
                .scenarios
                .iter()
                .any(|s| s.config.endpoint == Endpoint::Sim);
            embedded.stop().await;
            let summary = result?;
            if uses_sim {
                println!("(engine: the embedded kvbench-sim, a simulated engine; figures show the harness and the cache model, not a GPU)");
            }
            Ok(if summary.cancelled {
                ExitCode::from(EXIT_INTERRUPTED)
            } else if summary.failed() > 0 {
                ExitCode::from(EXIT_SCENARIO_FAILED)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
