//! `kvbench agents PLAN`: reaches every agent of the plan's `agents:` and shows what each
//! is; exit 1 when one cannot be reached or speaks another protocol version.

use std::path::Path;
use std::process::ExitCode;

use super::load_plan;
use crate::agents::{self, AgentError};

/// `kvbench agents PLAN`.
pub async fn command(plan: &Path) -> anyhow::Result<ExitCode> {
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

/// One line per remote agent: what it is, or why it could not be reached.
pub fn print_agents(reached: &[agents::Reached]) {
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
            Err(e @ (AgentError::Protocol { .. } | AgentError::ProtocolRefused { .. })) => {
                outln!("{}  {}  INCOMPATIBLE  {e}", r.spec.name, r.spec.address)
            }
            Err(e) => outln!("{}  {}  UNREACHABLE  {e}", r.spec.name, r.spec.address),
        }
    }
}
