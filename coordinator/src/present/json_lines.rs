//! `kvbench run --json`: the run's events as JSON Lines, one object per event with an
//! `event` field, for scripts and dashboards. It listens to the same events as the
//! console; records and telemetry samples come as they arrive, with the fields of the
//! results and telemetry files.

use std::io::Write;

use serde_json::{json, Value};

use crate::engine::events::{Observer, RunEvent};

/// Writes each event as one line of JSON; a closed pipe ends the stream, never the run.
#[derive(Debug)]
pub struct JsonEvents<W: Write> {
    out: W,
    closed: bool,
}

impl<W: Write> JsonEvents<W> {
    pub fn new(out: W) -> Self {
        JsonEvents { out, closed: false }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn emit(&mut self, v: Value) {
        if self.closed {
            return;
        }
        let ok = serde_json::to_writer(&mut self.out, &v).is_ok()
            && self.out.write_all(b"\n").is_ok()
            && self.out.flush().is_ok();
        self.closed = !ok;
    }
}

/// The event as one JSON object.
pub fn to_json(event: &RunEvent<'_>) -> Value {
    match event {
        RunEvent::RunStarted { plan, agents } => json!({
            "event": "run_started",
            "plan": plan.path,
            "output_dir": plan.output_dir,
            "isolation": plan.isolation,
            "scenarios": plan.scenarios.iter().map(|s| &s.name).collect::<Vec<_>>(),
            "agents": agents,
        }),
        RunEvent::IsolationStarted { policy } => {
            json!({"event": "isolation_started", "policy": policy})
        }
        RunEvent::Clearing { agent } => json!({"event": "clearing", "agent": agent}),
        RunEvent::Cleared(o) => json!({"event": "cleared", "outcome": o}),
        RunEvent::Restarting { agent } => json!({"event": "restarting", "agent": agent}),
        RunEvent::Restarted(o) => json!({"event": "restarted", "outcome": o}),
        RunEvent::AgentCallFailed { what, error } => {
            json!({"event": "agent_call_failed", "call": what, "error": error})
        }
        RunEvent::FallingBackToRestart => json!({"event": "falling_back_to_restart"}),
        RunEvent::NotClearing { policy } => json!({"event": "not_clearing", "policy": policy}),
        RunEvent::Waiting { seconds } => json!({"event": "waiting", "seconds": seconds}),
        RunEvent::ScenarioStarted {
            index,
            total,
            scenario,
            agents,
        } => json!({
            "event": "scenario_started",
            "index": index,
            "total": total,
            "scenario": scenario.name,
            "type": scenario.kind,
            "rounds": scenario.rounds,
            "agent": agents.iter().map(|a| a.agent_name.as_str()).collect::<Vec<_>>().join(","),
            "agents": agents.iter().map(|a| &a.agent_name).collect::<Vec<_>>(),
        }),
        RunEvent::Round {
            scenario,
            round,
            event,
        } => json!({
            "event": "round",
            "scenario": scenario.name,
            "round": round,
            "data": event,
        }),
        RunEvent::PointNotNeeded {
            index,
            total,
            scenario,
        } => json!({
            "event": "point_not_needed",
            "index": index,
            "total": total,
            "scenario": scenario.name,
            "search": scenario.sweep.as_ref().map(|p| &p.scenario),
        }),
        RunEvent::ScenarioKept {
            index,
            total,
            outcome,
        } => json!({
            "event": "scenario_kept",
            "index": index,
            "total": total,
            "scenario": outcome.name,
            "status": outcome.stats.status,
            "stats_file": outcome.stats_path,
            "results_file": outcome.results_path,
        }),
        RunEvent::LateRecords {
            agent,
            scenario,
            round,
            records,
            file,
        } => json!({
            "event": "late_records",
            "agent": agent,
            "scenario": scenario,
            "round": round,
            "records": records,
            "file": file,
        }),
        RunEvent::PartFailed {
            scenario,
            round,
            agent,
            error,
        } => json!({
            "event": "part_failed",
            "scenario": scenario.name,
            "round": round,
            "agent": agent,
            "error": error,
        }),
        RunEvent::EngineFailed {
            scenario,
            round,
            trouble,
        } => json!({
            "event": "engine_failed",
            "scenario": scenario.name,
            "round": round,
            "agent": trouble.agent,
            "at_ms": trouble.down.at_ms,
            "detail": trouble.down.detail,
            "restart": trouble.restarted,
        }),
        RunEvent::EngineRerun {
            scenario,
            round,
            agent,
        } => json!({
            "event": "engine_rerun",
            "scenario": scenario.name,
            "round": round,
            "agent": agent,
        }),
        RunEvent::RoundEnded { scenario, round } => {
            json!({"event": "round_ended", "scenario": scenario.name, "round": round})
        }
        RunEvent::RoundStats { scenario, stats } => {
            json!({"event": "round_stats", "scenario": scenario.name, "stats": stats})
        }
        RunEvent::Verdict(i) => json!({"event": "verdict", "isolation": i}),
        RunEvent::Rerunning { scenario, failed } => json!({
            "event": "rerunning",
            "scenario": scenario.name,
            "excess_requests": failed.excess.len(),
            "warm_groups": failed.warm_groups.len(),
            "over_cold_limit": failed.round1_bound.as_ref().is_some_and(|b| b.exceeded),
            "why": failed.warm_summary(),
        }),
        RunEvent::Comparison(c) => json!({"event": "comparison", "comparison": c}),
        RunEvent::Problem(p) => json!({"event": "problem", "message": p}),
        RunEvent::OutputFailed(e) => json!({
            "event": "output_failed",
            "file": e.path,
            "message": e.message,
        }),
        RunEvent::ScenarioFinished { outcome, took_s } => json!({
            "event": "scenario_finished",
            "scenario": outcome.name,
            "status": outcome.stats.status,
            "error": outcome.stats.error,
            "verdict": outcome.stats.isolation.verdict,
            "failed_requests": outcome.failed_requests(),
            "records": outcome.records,
            "stats_file": outcome.stats_path,
            "results_file": outcome.results_path,
            "telemetry_file": outcome.telemetry_path,
            "cache_efficiency": outcome
                .stats
                .rounds
                .iter()
                .map(|r| json!({"round": r.round, "cache_efficiency": r.cache_efficiency}))
                .collect::<Vec<_>>(),
            "took_s": took_s,
        }),
        RunEvent::RunFinished { summary, .. } => json!({
            "event": "run_finished",
            "scenarios": summary.scenarios.len(),
            "failed": summary.failed(),
            "degraded": summary.degraded(),
            "cancelled": summary.cancelled,
            "took_s": summary.total.as_secs_f64(),
            "report_file": summary.report,
            "html_report_file": summary.html_report,
        }),
    }
}

impl<W: Write> Observer for JsonEvents<W> {
    fn on(&mut self, event: &RunEvent<'_>) {
        if let RunEvent::RunFinished { summary, .. } = event {
            // Each swept scenario's capacity at its objectives, before the run's end.
            for c in summary.capacities() {
                self.emit(json!({"event": "capacity", "scenario": c.scenario, "capacity": c}));
            }
        }
        self.emit(to_json(event));
    }
}

/// Two observers hearing the same events, in order.
#[derive(Debug)]
pub struct Both<A, B>(pub A, pub B);

impl<A: Observer, B: Observer> Observer for Both<A, B> {
    fn on(&mut self, event: &RunEvent<'_>) {
        self.0.on(event);
        self.1.on(event);
    }
}
