//! Isolation between scenarios: the plan's policy carried out through the scenario's agent
//! (clear, restart, clear then restart when the cache stayed warm, wait, nothing). What it
//! did becomes the scenario's [`IsolationInfo`]; whether round 1 was really cold is judged
//! after round 1 ([`IsolationInfo::judge`]).

use std::time::Duration;

use kvbench_common::agent::{ColdProbe, RestartError, RestartOutcome};
use kvbench_common::plan::{IsolationPolicy, Plan};
use kvbench_common::stats::{IsolationInfo, IsolationStatus};
use tokio_util::sync::CancellationToken;

use crate::agent_client::AgentClient;
use crate::events::{Observer, RunEvent};

const REASON: &str = "isolation between scenarios";

/// What isolation did for a scenario that had none (the plan's first, unless
/// `isolate_before_first`).
pub fn none_before_first(plan: &Plan) -> IsolationInfo {
    IsolationInfo::new(
        plan.isolation,
        IsolationStatus::None,
        "first scenario of the plan".into(),
    )
}

/// One step's result: what it did, in words, and the cold check where there was one.
struct Step {
    status: IsolationStatus,
    detail: String,
    probe: Option<ColdProbe>,
    /// The clear's cold check that made `clear_or_restart` restart instead.
    fallback_probe: Option<ColdProbe>,
    restart_error: Option<RestartError>,
}

/// Runs the plan's isolation policy through the agent, then waits. Never fails the plan:
/// the result is recorded in the next scenario's stats and judged after its round 1.
pub async fn isolate(
    plan: &Plan,
    agent: &AgentClient,
    cancel: &CancellationToken,
    obs: &mut dyn Observer,
) -> IsolationInfo {
    obs.on(&RunEvent::IsolationStarted {
        policy: plan.isolation,
    });
    let step = match plan.isolation {
        IsolationPolicy::Clear => clear(agent, obs).await,
        IsolationPolicy::Restart => restart(agent, obs).await,
        IsolationPolicy::ClearOrRestart => clear_or_restart(agent, obs).await,
        IsolationPolicy::Wait | IsolationPolicy::None => {
            obs.on(&RunEvent::NotClearing {
                policy: plan.isolation,
            });
            Step {
                status: IsolationStatus::Skipped,
                detail: format!("isolation is {}", plan.isolation.label()),
                probe: None,
                fallback_probe: None,
                restart_error: None,
            }
        }
    };
    let wait = if plan.isolation == IsolationPolicy::None {
        0.0
    } else {
        plan.wait_between_scenarios_s
    };
    if wait > 0.0 {
        obs.on(&RunEvent::Waiting { seconds: wait });
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(wait)) => {}
            _ = cancel.cancelled() => {}
        }
    }
    IsolationInfo {
        wait_s: wait,
        probe: step.probe,
        fallback_probe: step.fallback_probe,
        restart_error: step.restart_error,
        ..IsolationInfo::new(plan.isolation, step.status, step.detail)
    }
}

/// Restarts the engine so that a scenario whose round 1 was not cold can run again
/// (`clear_or_restart`); what it did, to be judged after the new round 1.
pub async fn restart_for_rerun(
    plan: &Plan,
    agent: &AgentClient,
    obs: &mut dyn Observer,
) -> IsolationInfo {
    let step = restart(agent, obs).await;
    IsolationInfo {
        restart_error: step.restart_error,
        ..IsolationInfo::new(plan.isolation, step.status, step.detail)
    }
}

async fn clear(agent: &AgentClient, obs: &mut dyn Observer) -> Step {
    obs.on(&RunEvent::Clearing {
        agent: agent.name(),
    });
    match agent.clear(REASON).await {
        Ok(r) => {
            obs.on(&RunEvent::Cleared(&r));
            Step {
                status: if r.success {
                    IsolationStatus::Cleared
                } else {
                    IsolationStatus::Failed
                },
                detail: r.detail,
                probe: r.probe,
                fallback_probe: None,
                restart_error: None,
            }
        }
        Err(e) => {
            obs.on(&RunEvent::AgentCallFailed {
                what: "clear",
                error: e.to_string(),
            });
            Step {
                status: IsolationStatus::Failed,
                detail: e.to_string(),
                probe: None,
                fallback_probe: None,
                restart_error: None,
            }
        }
    }
}

async fn restart(agent: &AgentClient, obs: &mut dyn Observer) -> Step {
    obs.on(&RunEvent::Restarting {
        agent: agent.name(),
    });
    let (status, detail, restart_error) = match agent.restart(REASON).await {
        Ok(r) => {
            obs.on(&RunEvent::Restarted(&r));
            let (status, detail) = restart_step(&r);
            (status, detail, r.error)
        }
        Err(e) => {
            obs.on(&RunEvent::AgentCallFailed {
                what: "restart",
                error: e.to_string(),
            });
            (IsolationStatus::Failed, e.to_string(), None)
        }
    };
    Step {
        status,
        detail,
        probe: None,
        fallback_probe: None,
        restart_error,
    }
}

fn restart_step(r: &RestartOutcome) -> (IsolationStatus, String) {
    match r.error {
        None => (IsolationStatus::Restarted, r.detail.clone()),
        Some(class) => (IsolationStatus::Failed, format!("{class}: {}", r.detail)),
    }
}

/// Clears; restarts when the clear failed or its cold check found a warm cache. The
/// probe that triggered the restart is kept (`fallback_probe`).
async fn clear_or_restart(agent: &AgentClient, obs: &mut dyn Observer) -> Step {
    let cleared = clear(agent, obs).await;
    let stale = cleared.probe.as_ref().is_some_and(ColdProbe::is_stale);
    if cleared.status == IsolationStatus::Cleared && !stale {
        return cleared;
    }
    obs.on(&RunEvent::FallingBackToRestart);
    let restarted = restart(agent, obs).await;
    Step {
        status: restarted.status,
        detail: format!(
            "clear: {}; then restart: {}",
            cleared.detail, restarted.detail
        ),
        probe: None,
        fallback_probe: cleared.probe,
        restart_error: restarted.restart_error,
    }
}
