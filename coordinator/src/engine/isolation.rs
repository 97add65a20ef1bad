//! Isolation between scenarios: the plan's policy carried out through the scenario's agent
//! (clear, restart, clear then restart when the cache stayed warm, wait, nothing), on every
//! agent of a split scenario at once. What it did becomes the scenario's
//! [`IsolationInfo`]; whether round 1 was really cold is judged after round 1
//! ([`IsolationInfo::judge`]), agent by agent.

use std::time::Duration;

use kvbench_common::agent::{ColdProbe, RestartError, RestartOutcome};
use kvbench_common::isolation::{IsolationInfo, IsolationStatus};
use kvbench_common::plan::{IsolationPolicy, Plan};
use tokio_util::sync::CancellationToken;

use super::events::{Observer, RunEvent, Shared};
use crate::agents::AgentClient;

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

/// Runs the plan's isolation policy through the scenario's agents (all at once), then
/// waits. Never fails the plan: the result is recorded in the next scenario's stats and
/// judged after its round 1.
pub async fn isolate(
    plan: &Plan,
    agents: &[&AgentClient],
    cancel: &CancellationToken,
    obs: &mut dyn Observer,
) -> IsolationInfo {
    obs.on(&RunEvent::IsolationStarted {
        policy: plan.isolation,
    });
    if matches!(
        plan.isolation,
        IsolationPolicy::Wait | IsolationPolicy::None
    ) {
        obs.on(&RunEvent::NotClearing {
            policy: plan.isolation,
        });
    }
    let mut steps = on_each(plan, Action::Policy, agents, obs).await;
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
    if steps.len() == 1 {
        let (_, step) = steps.remove(0);
        return IsolationInfo {
            wait_s: wait,
            ..step.info(plan)
        };
    }
    let parts = steps
        .into_iter()
        .map(|(a, step)| (a, step.info(plan)))
        .collect();
    IsolationInfo::across(plan.isolation, parts, wait)
}

/// Restarts the engines so that a scenario whose round 1 was not cold can run again
/// (`clear_or_restart`); what it did, to be judged after the new round 1.
pub async fn restart_for_rerun(
    plan: &Plan,
    agents: &[&AgentClient],
    obs: &mut dyn Observer,
) -> IsolationInfo {
    let mut steps = on_each(plan, Action::Restart, agents, obs).await;
    if steps.len() == 1 {
        return steps.remove(0).1.info(plan);
    }
    let parts = steps
        .into_iter()
        .map(|(a, step)| (a, step.info(plan)))
        .collect();
    IsolationInfo::across(plan.isolation, parts, 0.0)
}

/// What [`on_each`] does on each agent.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// The plan's isolation policy.
    Policy,
    /// A restart (`clear_or_restart` running a scenario again).
    Restart,
}

/// Does `action` on every agent at once (each telling `obs` as it goes); the results by
/// agent name, in the agents' order.
async fn on_each(
    plan: &Plan,
    action: Action,
    agents: &[&AgentClient],
    obs: &mut dyn Observer,
) -> Vec<(String, Step)> {
    let shared = Shared::new(obs);
    let runs = agents.iter().map(|agent| {
        let mut tap = shared.tap();
        async move {
            let obs = &mut tap;
            let step = match (action, plan.isolation) {
                (Action::Restart, _) | (_, IsolationPolicy::Restart) => restart(agent, obs).await,
                (_, IsolationPolicy::Clear) => clear(agent, obs).await,
                (_, IsolationPolicy::ClearOrRestart) => clear_or_restart(agent, obs).await,
                (_, IsolationPolicy::Wait | IsolationPolicy::None) => Step {
                    status: IsolationStatus::Skipped,
                    detail: format!("isolation is {}", plan.isolation.label()),
                    probe: None,
                    fallback_probe: None,
                    restart_error: None,
                },
            };
            (agent.name().to_owned(), step)
        }
    });
    futures_util::future::join_all(runs).await
}

impl Step {
    fn info(self, plan: &Plan) -> IsolationInfo {
        IsolationInfo {
            probe: self.probe,
            fallback_probe: self.fallback_probe,
            restart_error: self.restart_error,
            ..IsolationInfo::new(plan.isolation, self.status, self.detail)
        }
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
