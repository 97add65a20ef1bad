//! `kvbench validate PLAN`: checks a plan and every file it names, the remote agents'
//! engines when they answer, and prints the plan's scenarios and time estimate. Nothing runs.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use kvbench_common::plan::Plan;

use super::{load_plan, EXIT_BAD_PLAN};
use crate::agents;
use crate::engine::estimate;

/// `kvbench validate PLAN`.
pub async fn command(plan: &Path) -> anyhow::Result<ExitCode> {
    let (p, _) = match load_plan(plan) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    if let Err(e) = crate::output::check_output_dir(&p.output_dir) {
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
