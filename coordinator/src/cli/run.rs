//! `kvbench run PLAN`: loads the plan, reaches its agents, starts the embedded default,
//! runs the plan through the engine with the console (or JSON Lines) listening, writes the
//! reports at its end, and turns the summary into the exit status. Stop signals are caught
//! here: the first stops the load and writes what was measured, a second ends at once.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kvbench_common::plan::{Endpoint, Plan};
use kvbench_sim::SimConfig;
use tokio_util::sync::CancellationToken;

use super::agents::print_agents;
use super::{load_plan, EXIT_BAD_PLAN, EXIT_DEGRADED, EXIT_HANGUP, EXIT_INTERRUPTED};
use super::{EXIT_NOT_COLD, EXIT_OUTPUT_FAILED, EXIT_SCENARIO_FAILED, EXIT_TERMINATED};
use crate::agents::{self, AgentClient, AgentSet};
use crate::engine::inputs::Inputs;
use crate::engine::outcome::RunSummary;
use crate::engine::plan_run::{run_plan, WrittenReports};
use crate::present::{console, json_lines, report};

/// The reports of a finished (or stopped) run: what the CLI hands the engine's
/// [`run_plan`] to write them at the run's end (the presenters' report writer).
pub fn write_reports(dir: &Path, run_file: &Path) -> anyhow::Result<WrittenReports> {
    let w = report::write(dir, run_file, None)?;
    Ok(WrittenReports {
        warning: w.glyph_warning(),
        report: w.report,
        html: w.html,
    })
}

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

/// Which stop signals came: the first cancels the run (it stops its load and writes what
/// was measured); a second ends the command at once.
#[derive(Debug, Default)]
struct Stops {
    first: std::sync::OnceLock<StopSignal>,
    second: std::sync::OnceLock<StopSignal>,
    now: CancellationToken,
}

/// Cancels `cancel` at the first stop signal and `Stops::now` at the second.
fn on_stop_signals(cancel: CancellationToken) -> std::sync::Arc<Stops> {
    let stops = std::sync::Arc::new(Stops::default());
    let s = stops.clone();
    tokio::spawn(async move {
        let first = stop_signal().await;
        let _ = s.first.set(first);
        eprintln!(
            "\n{}: stopping the load and writing what was measured (signal again to quit now)",
            first.name()
        );
        cancel.cancel();
        let again = stop_signal().await;
        let _ = s.second.set(again);
        s.now.cancel();
    });
    stops
}

/// A name `--only` gives that is no scenario of the plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no scenario named {name:?}; the plan's scenarios are: {}", .known.join(", "))]
struct UnknownScenario {
    name: String,
    known: Vec<String>,
}

/// Whether `--only WANT` names the scenario `name`: a plan name stands for its runs on each
/// agent (`@agent`), its sweep's points (`~c16`) and its repeats (`#k`); a point's name for
/// its repeats.
fn stands_for(name: &str, want: &str) -> bool {
    name.strip_prefix(want)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['@', '~', '#']))
}

/// Keeps the scenarios `--only` names (all when it names none); an unknown name is an error
/// listing the plan's.
fn keep_only(p: &mut Plan, only: &[String]) -> Result<(), UnknownScenario> {
    if only.is_empty() {
        return Ok(());
    }
    for want in only {
        if !p.scenarios.iter().any(|s| stands_for(&s.name, want)) {
            return Err(UnknownScenario {
                name: want.clone(),
                known: p.scenarios.iter().map(|s| s.name.clone()).collect(),
            });
        }
    }
    p.scenarios
        .retain(|s| only.iter().any(|w| stands_for(&s.name, w)));
    Ok(())
}

/// Reaches the plan's remote agents before anything runs: lists them, refuses a plan with
/// an unreachable one (or, with `skip`, leaves its scenarios out) and one whose scenario
/// names an engine its agent does not own.
async fn remote_agents(
    p: &mut Plan,
    skip: bool,
) -> Result<BTreeMap<String, AgentClient>, ExitCode> {
    let mut by_name = BTreeMap::new();
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
pub fn exit_status(summary: &RunSummary, stopped_by: Option<StopSignal>) -> u8 {
    if let Some(s) = stopped_by.filter(|_| summary.cancelled) {
        s.exit_code()
    } else if summary.output_failure.is_some() {
        EXIT_OUTPUT_FAILED
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

/// Where `kvbench run`'s plan comes from.
#[derive(Debug)]
pub enum PlanSource {
    File(PathBuf),
    /// `--resume RUN_DIR`: the plan of the interrupted run there.
    Resume(PathBuf),
}

/// The plan of the interrupted run in `dir` and its run file, or the exit status of a
/// refusal (told on stderr): no run there, a finished one, or a file it read that changed.
fn resumable(dir: &Path) -> Result<(PathBuf, crate::output::RunFile), ExitCode> {
    use crate::engine::resume::{changed_files, run_to_resume, ResumeRefused};
    let (path, run_file) = match run_to_resume(dir) {
        Ok(r) => r,
        Err(e @ ResumeRefused::Finished { .. }) => {
            eprintln!("kvbench: {e}");
            return Err(ExitCode::SUCCESS);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Err(ExitCode::from(EXIT_BAD_PLAN));
        }
    };
    let changed = changed_files(&run_file);
    if !changed.is_empty() {
        for e in &changed {
            eprintln!("error: {e}");
        }
        eprintln!(
            "kvbench: nothing was run ({} is the run's file)",
            path.display()
        );
        return Err(ExitCode::from(EXIT_BAD_PLAN));
    }
    eprintln!(
        "kvbench: resuming {} (started {}, {})",
        path.display(),
        run_file.started_at,
        match run_file.state {
            crate::output::RunState::Cancelled => "stopped by a signal",
            _ => "interrupted",
        }
    );
    Ok((PathBuf::from(&run_file.plan_file), run_file))
}

/// What `kvbench run` was given.
#[derive(Debug)]
pub struct RunOptions {
    pub plan: PlanSource,
    pub output_dir: Option<PathBuf>,
    pub json: bool,
    pub skip_unreachable: bool,
    pub only: Vec<String>,
}

/// `kvbench run PLAN`.
pub async fn command(o: RunOptions) -> anyhow::Result<ExitCode> {
    let RunOptions {
        plan,
        output_dir,
        json,
        skip_unreachable,
        only,
    } = o;
    let (plan, resume) = match plan {
        PlanSource::File(p) => (p, None),
        PlanSource::Resume(dir) => match resumable(&dir) {
            Ok((plan, run_file)) => (plan, Some((dir, run_file))),
            Err(code) => return Ok(code),
        },
    };
    let (mut p, inputs) = match load_plan(&plan) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let run_file = match resume {
        Some((dir, run_file)) => {
            // The run's scenarios (an --only run ran some of the plan's), in its folder.
            p.scenarios
                .retain(|s| run_file.scenarios.iter().any(|r| r.name == s.name));
            p.output_dir = dir;
            Some(run_file)
        }
        None => None,
    };
    if let Err(e) = keep_only(&mut p, &only) {
        eprintln!("error: {}: --only: {e}", plan.display());
        eprintln!("kvbench: nothing was run");
        return Ok(ExitCode::from(EXIT_BAD_PLAN));
    }
    if let Some(dir) = output_dir {
        p.output_dir = dir;
    }
    if let Err(e) = crate::output::check_output_dir(&p.output_dir) {
        eprintln!("error: {}: output_dir: {e:#}", plan.display());
        eprintln!("kvbench: nothing was run");
        return Ok(ExitCode::from(EXIT_BAD_PLAN));
    }
    let remote = match remote_agents(&mut p, skip_unreachable).await {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let cancel = CancellationToken::new();
    let stops = on_stop_signals(cancel.clone());
    tokio::select! {
        done = run_with_embedded(&p, &inputs, remote, json, cancel, run_file) => {
            let summary = done?;
            Ok(ExitCode::from(exit_status(&summary, stops.first.get().copied())))
        }
        () = stops.now.cancelled() => {
            let code = stops.second.get().map_or(EXIT_INTERRUPTED, |s| s.exit_code());
            Ok(ExitCode::from(code))
        }
    }
}

/// Starts the embedded agents the plan needs, runs it with them and `remote`, and stops them.
async fn run_with_embedded(
    p: &Plan,
    inputs: &Inputs,
    remote: BTreeMap<String, AgentClient>,
    json: bool,
    cancel: CancellationToken,
    resume: Option<crate::output::RunFile>,
) -> anyhow::Result<RunSummary> {
    let embedded = agents::Embedded::start(p, SimConfig::default()).await?;
    let set = AgentSet {
        by_endpoint: embedded.by_endpoint.clone(),
        by_name: remote,
    };
    let mut both;
    let mut console;
    let obs: &mut dyn crate::engine::events::Observer = if json {
        both = json_lines::Both(
            console::Console::new(std::io::stderr(), false),
            json_lines::JsonEvents::new(std::io::stdout()),
        );
        &mut both
    } else {
        console = console::Console::stdout();
        &mut console
    };
    let result = match resume {
        Some(run_file) => {
            crate::engine::plan_run::resume_plan(
                p,
                inputs,
                &set,
                cancel,
                obs,
                write_reports,
                run_file,
            )
            .await
        }
        None => run_plan(p, inputs, &set, cancel, obs, write_reports).await,
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
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::stands_for;

    #[test]
    fn only_names_a_scenario_with_its_agents_points_and_repeats() {
        for name in ["a", "a@gpu-1", "a~c16", "a~c16#2", "a@gpu-1~r0.5#1", "a#3"] {
            assert!(stands_for(name, "a"), "{name}");
        }
        assert!(stands_for("a~c16#2", "a~c16"));
        assert!(!stands_for("a~c4", "a~c16"));
        assert!(!stands_for("ab", "a"));
        assert!(!stands_for("a-no-cache~c1", "a"));
    }
}
