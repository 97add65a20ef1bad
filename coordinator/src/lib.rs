//! `kvbench`, the coordinator: loads a plan, connects to agents (or starts the embedded
//! default), runs scenarios in order with isolation between them, and writes the results.

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
pub(crate) use outln;

pub mod agent_client;
pub mod agents;
pub mod calibrate;
pub mod compare;
pub mod console;
pub mod estimate;
pub mod events;
pub mod inputs;
pub mod inspect;
pub mod isolation;
pub mod json_events;
pub mod report;
pub mod results;
pub mod runner;
pub mod scale;
pub mod session;
pub mod split;

use std::io::Write as _;
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
/// Exit status when the user interrupted the run (SIGINT, Ctrl-C).
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit status when the run was told to stop (SIGTERM, e.g. `timeout`).
pub const EXIT_TERMINATED: u8 = 143;
/// Exit status when the run's terminal went away (SIGHUP).
pub const EXIT_HANGUP: u8 = 129;

/// The signal that stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
    Hangup,
}

impl StopSignal {
    /// 128 + the signal's number, as shells report it.
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => EXIT_INTERRUPTED,
            StopSignal::Terminate => EXIT_TERMINATED,
            StopSignal::Hangup => EXIT_HANGUP,
        }
    }

    fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "interrupted",
            StopSignal::Terminate => "terminated (SIGTERM)",
            StopSignal::Hangup => "hung up (SIGHUP)",
        }
    }
}

/// Waits for SIGINT, SIGTERM or SIGHUP and says which came.
async fn stop_signal() -> StopSignal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => StopSignal::Interrupt,
                _ = term.recv() => StopSignal::Terminate,
                _ = hup.recv() => StopSignal::Hangup,
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    StopSignal::Interrupt
}

/// Cancels `cancel` at the first stop signal (the run then stops its load and writes what
/// was measured); a second signal ends the process at once. Returns which signal came.
fn on_stop_signals(cancel: CancellationToken) -> std::sync::Arc<std::sync::OnceLock<StopSignal>> {
    let seen = std::sync::Arc::new(std::sync::OnceLock::new());
    let s = seen.clone();
    tokio::spawn(async move {
        let first = stop_signal().await;
        let _ = s.set(first);
        eprintln!(
            "\n{}: stopping the load and writing what was measured (signal again to quit now)",
            first.name()
        );
        cancel.cancel();
        let again = stop_signal().await;
        std::process::exit(i32::from(again.exit_code()));
    });
    seen
}

/// Loads a plan and everything it reads (agent config, datasets, tokenizers), printing
/// every problem on stderr.
pub fn load_plan(path: &Path) -> Result<(Plan, inputs::Inputs), ExitCode> {
    plan::load(path)
        .and_then(|p| agents::agent_file(&p).map(|_| p))
        .and_then(|p| inputs::Inputs::load(&p).map(|i| (p, i)))
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

/// Keeps the scenarios `--only` names (all when it names none); an unknown name is an error
/// listing the plan's.
fn keep_only(p: &mut Plan, only: &[String]) -> Result<(), String> {
    if only.is_empty() {
        return Ok(());
    }
    // A plan name stands for its runs on each agent (`@agent`) and its repeats (`#k`).
    let base = |name: &str| name.split(['@', '#']).next().unwrap_or(name).to_owned();
    for want in only {
        if !p
            .scenarios
            .iter()
            .any(|s| s.name == *want || base(&s.name) == *want)
        {
            let names: Vec<&str> = p.scenarios.iter().map(|s| s.name.as_str()).collect();
            return Err(format!(
                "no scenario named {want:?}; the plan's scenarios are: {}",
                names.join(", ")
            ));
        }
    }
    p.scenarios
        .retain(|s| only.iter().any(|w| s.name == *w || base(&s.name) == *w));
    Ok(())
}

/// One line per remote agent: what it is, or why it could not be reached.
fn print_agents(reached: &[agents::Reached]) {
    for r in reached {
        let labels: Vec<String> = r
            .spec
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        match &r.result {
            Ok((a, clock)) => {
                let i = a.info();
                let gpus = if i.gpus.is_empty() {
                    i.gpu_summary()
                } else {
                    let mem: u64 = i.gpus.iter().map(|g| g.memory_total_bytes).sum();
                    format!(
                        "{} x {} ({:.0} GiB in all)",
                        i.gpus.len(),
                        i.gpus[0].name,
                        mem as f64 / f64::from(1u32 << 30)
                    )
                };
                let engine = format!(
                    "{}{} {}  model {}  {}",
                    i.engine_kind,
                    if i.engine_version.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", i.engine_version)
                    },
                    i.engine_display,
                    if i.engine_models.is_empty() {
                        "?".to_owned()
                    } else {
                        i.engine_models.join(",")
                    },
                    match i.engine_healthy {
                        Some(true) => "healthy".to_owned(),
                        Some(false) => format!("NOT HEALTHY ({})", i.engine_health_detail),
                        None => "health unknown".to_owned(),
                    }
                );
                outln!(
                    "{}  {}  reachable  kvbench-agent {} (protocol {})  host {}  labels {}  GPUs: {}  engine {}  clock offset {:+.1} ms, RTT {:.1} ms{}",
                    r.spec.name,
                    r.spec.address,
                    i.agent_version,
                    i.protocol_version,
                    i.hostname,
                    if labels.is_empty() { "-".to_owned() } else { labels.join(",") },
                    gpus,
                    engine,
                    clock.offset_ms,
                    clock.rtt_ms,
                    if clock.offset_ms.abs() > agents::CLOCK_OFFSET_WARN_MS {
                        format!("  WARNING: clock offset above {} ms", agents::CLOCK_OFFSET_WARN_MS)
                    } else {
                        String::new()
                    }
                );
                for w in &i.warnings {
                    outln!("  WARNING: {w}");
                }
            }
            Err(
                e @ (agent_client::AgentError::Protocol { .. }
                | agent_client::AgentError::ProtocolRefused { .. }),
            ) => outln!("{}  {}  INCOMPATIBLE  {e}", r.spec.name, r.spec.address),
            Err(e) => outln!("{}  {}  UNREACHABLE  {e}", r.spec.name, r.spec.address),
        }
    }
}

/// Reaches the plan's remote agents before anything runs: lists them, refuses a plan with
/// an unreachable one (or, with `skip`, leaves its scenarios out) and one whose scenario
/// names an engine its agent does not own.
async fn remote_agents(
    p: &mut Plan,
    skip: bool,
) -> Result<std::collections::BTreeMap<String, agent_client::AgentClient>, ExitCode> {
    let mut by_name = std::collections::BTreeMap::new();
    if p.agents.is_empty() {
        return Ok(by_name);
    }
    let reached = agents::reach(p).await;
    print_agents(&reached);
    let down: Vec<&str> = reached
        .iter()
        .filter(|r| r.result.is_err())
        .map(|r| r.spec.name.as_str())
        .collect();
    if !down.is_empty() && !skip {
        eprintln!(
            "kvbench: agent{} {} cannot be reached; nothing was run (--skip-unreachable runs the other agents' scenarios)",
            if down.len() == 1 { "" } else { "s" },
            down.join(", ")
        );
        return Err(ExitCode::from(EXIT_BAD_PLAN));
    }
    let errors = agents::ownership_errors(p, &reached);
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        eprintln!("kvbench: nothing was run");
        return Err(ExitCode::from(EXIT_BAD_PLAN));
    }
    let before = p.scenarios.len();
    p.scenarios.retain(|s| {
        let keep = s.agents.iter().all(|a| !down.contains(&a.as_str()));
        if !keep {
            eprintln!(
                "kvbench: leaving out scenario {}: its agent cannot be reached",
                s.name
            );
        }
        keep
    });
    if p.scenarios.is_empty() && before > 0 {
        eprintln!("kvbench: no scenario is left to run");
        return Err(ExitCode::from(EXIT_BAD_PLAN));
    }
    for r in reached {
        if let Ok((a, _)) = r.result {
            by_name.insert(r.spec.name, a);
        }
    }
    Ok(by_name)
}

/// The exit status of a run: a stop signal's, else the worst of failed (1), degraded (3)
/// and not cold (4), else 0.
pub fn exit_status(summary: &runner::RunSummary, stopped_by: Option<StopSignal>) -> u8 {
    if let Some(s) = stopped_by.filter(|_| summary.cancelled) {
        s.exit_code()
    } else if summary.cancelled {
        EXIT_INTERRUPTED
    } else if summary.failed() > 0 {
        EXIT_SCENARIO_FAILED
    } else if summary.degraded() > 0 {
        EXIT_DEGRADED
    } else if !summary.not_cold().is_empty() {
        EXIT_NOT_COLD
    } else {
        0
    }
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
        Command::Agents { plan } => agents_command(&plan).await,
        Command::Validate { plan } => validate_command(&plan).await,
        Command::Compare(args) => Ok(compare_command(&args)),
        Command::Report {
            run_dir,
            run,
            font,
            csv,
        } => report_command(&run_dir, run.as_deref(), font.as_deref(), csv),
        Command::Run {
            plan,
            output_dir,
            json,
            skip_unreachable,
            only,
        } => {
            run_command(RunOptions {
                plan,
                output_dir,
                json,
                skip_unreachable,
                only,
            })
            .await
        }
    }
}

/// `kvbench agents PLAN`.
async fn agents_command(plan: &Path) -> anyhow::Result<ExitCode> {
    let (p, _) = match load_plan(plan) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    if p.agents.is_empty() {
        outln!(
            "{}: no `agents:` section: every scenario runs on an embedded agent",
            plan.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let reached = agents::reach(&p).await;
    print_agents(&reached);
    let bad = reached.iter().filter(|r| r.result.is_err()).count();
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `kvbench validate PLAN`.
async fn validate_command(plan: &Path) -> anyhow::Result<ExitCode> {
    let (p, _) = match load_plan(plan) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    if let Err(e) = results::check_output_dir(&p.output_dir) {
        eprintln!("error: {}: output_dir: {e:#}", plan.display());
        return Ok(ExitCode::from(EXIT_BAD_PLAN));
    }
    // Remote agents own their engines: a scenario may not name another.
    if !p.agents.is_empty() {
        let reached = agents::reach(&p).await;
        for r in &reached {
            if let Err(e) = &r.result {
                eprintln!(
                    "note: agent {} cannot be reached ({e}): the engine it owns is not checked",
                    r.spec.name
                );
            }
        }
        let errors = agents::ownership_errors(&p, &reached);
        if !errors.is_empty() {
            for e in &errors {
                eprintln!("error: {e}");
            }
            return Ok(ExitCode::from(EXIT_BAD_PLAN));
        }
    }
    let mut out = std::io::stdout().lock();
    let n = p.scenarios.len();
    let _ = writeln!(
        out,
        "{}: OK, {n} scenario{}",
        plan.display(),
        if n == 1 { "" } else { "s" }
    );
    for s in &p.scenarios {
        let _ = writeln!(
            out,
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
    let estimate = estimate::plan(&p);
    let _ = writeln!(
        out,
        "Time estimate: about {} (per scenario: requests x (TTFT + generation) / concurrency, each round; plus isolation and waits)",
        estimate::human(estimate.total_s())
    );
    for e in &estimate.scenarios {
        let _ = writeln!(
            out,
            "  - {}: {} of rounds{} ({})",
            e.name,
            estimate::human(e.run_s),
            if e.isolation_s > 0.0 {
                format!(
                    " + {} isolation and wait before it",
                    estimate::human(e.isolation_s)
                )
            } else {
                String::new()
            },
            e.basis
        );
    }
    for s in &p.scenarios {
        if let Some(w) = estimate::name_warning(&s.name) {
            let _ = writeln!(out, "warning: {w}");
        }
    }
    if let Some(w) = mooncake_on_remote_agents(&p) {
        let _ = writeln!(out, "warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The seed's `mooncake.metadata_server_url` is a clear step of the embedded agents; a
/// remote agent clears what its own config file says. Said when the plan has both.
fn mooncake_on_remote_agents(p: &Plan) -> Option<String> {
    let url = p.mooncake_metadata_server_url.as_ref()?;
    let remote: Vec<&str> = p
        .scenarios
        .iter()
        .filter(|s| s.is_remote())
        .map(|s| s.name.as_str())
        .collect();
    if remote.is_empty() {
        return None;
    }
    Some(format!(
        "mooncake.metadata_server_url ({url}) is cleared by embedded agents only; {} run on remote agents, which clear what their own config file says: add `{{preset: mooncake_master, url: ...}}` to `clear_cache:` in each of their kvbench-agent config files (see deploy/agent/vllm.yaml)",
        remote.join(", ")
    ))
}

/// What `kvbench run` was given.
#[derive(Debug)]
struct RunOptions {
    plan: PathBuf,
    output_dir: Option<PathBuf>,
    json: bool,
    skip_unreachable: bool,
    only: Vec<String>,
}

/// `kvbench compare RUN_A RUN_B`: exit 0, 1 when a `--fail-on` metric regressed, 2 when
/// the runs cannot be read or an option is wrong.
fn compare_command(args: &compare::CompareArgs) -> ExitCode {
    match compare::run(args) {
        Ok((c, failed)) => {
            outln!("{}", compare::markdown(&c));
            if failed {
                eprintln!(
                    "kvbench compare: a metric of --fail-on ({}) regressed",
                    args.fail_on.join(",")
                );
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `kvbench report RUN_DIR`: exit 0 with the report's path, 1 when it cannot be written.
fn report_command(
    dir: &Path,
    run: Option<&str>,
    font: Option<&Path>,
    csv: bool,
) -> anyhow::Result<ExitCode> {
    let run_file = match run {
        Some(ts) => dir.join(format!("multi_scenario_run_{ts}.json")),
        None => match report::latest_run(dir) {
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
                let written = report::SavedRun::read(dir, &run_file)
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

/// `kvbench run PLAN`.
async fn run_command(o: RunOptions) -> anyhow::Result<ExitCode> {
    let RunOptions {
        plan,
        output_dir,
        json,
        skip_unreachable,
        only,
    } = o;
    let (mut p, inputs) = match load_plan(&plan) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    if let Err(e) = keep_only(&mut p, &only) {
        eprintln!("error: {}: --only: {e}", plan.display());
        eprintln!("kvbench: nothing was run");
        return Ok(ExitCode::from(EXIT_BAD_PLAN));
    }
    if let Some(dir) = output_dir {
        p.output_dir = dir;
    }
    if let Err(e) = results::check_output_dir(&p.output_dir) {
        eprintln!("error: {}: output_dir: {e:#}", plan.display());
        eprintln!("kvbench: nothing was run");
        return Ok(ExitCode::from(EXIT_BAD_PLAN));
    }
    let remote = match remote_agents(&mut p, skip_unreachable).await {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let cancel = CancellationToken::new();
    let stopped_by = on_stop_signals(cancel.clone());
    let embedded = agents::Embedded::start(&p, SimConfig::default()).await?;
    let set = agents::AgentSet {
        by_endpoint: embedded.by_endpoint.clone(),
        by_name: remote,
    };
    let result = if json {
        let mut both = json_events::Both(
            console::Console::new(std::io::stderr(), false),
            json_events::JsonEvents::new(std::io::stdout()),
        );
        runner::run_plan(&p, &inputs, &set, cancel, &mut both).await
    } else {
        let mut console = console::Console::stdout();
        runner::run_plan(&p, &inputs, &set, cancel, &mut console).await
    };
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
    if uses_sim && !json {
        let _ = writeln!(std::io::stdout(), "(engine: the embedded kvbench-sim, a simulated engine; figures show the harness and the cache model, not a GPU)");
    }
    Ok(ExitCode::from(exit_status(
        &summary,
        stopped_by.get().copied(),
    )))
}
