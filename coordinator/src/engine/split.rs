//! A scenario split across several agents at once (`placement: split`). Each agent gets a
//! disjoint, deterministic share of the request set ([`Share`]: the same every round, so
//! that round 2 replays on each engine the prompts it saw in round 1) and its part of the
//! load (concurrency, rate and cap divided); all start their measured phase at one instant,
//! set by the coordinator on each agent's clock with the offset measured at the handshake.
//! Their rounds merge into one view: records on the common clock (ms from the shared
//! start), percentiles from all records together, throughput over the union of the
//! agents' time spans; each agent's part stays available on its own.

use std::time::Duration;

use kvbench_common::agent::{
    Progress, RoundEvent, RoundFinished, RoundRequest, RoundStarted, Share,
};
use kvbench_common::plan::Scenario;
use kvbench_common::results::AgentHealth;
use tokio_util::sync::CancellationToken;

use super::events::{Observer, RunEvent, Shared};
use crate::agents::{AgentClient, RoundEnd, RoundRun};

/// How far ahead of now the shared start is set (plus the slowest agent's round trip):
/// time for every agent to get its request and open its first wave of connections.
pub const START_LEAD: Duration = Duration::from_millis(500);

/// One agent's part of a split round (its records went to the observer as they came,
/// already on the common clock).
#[derive(Debug, Clone)]
pub struct Part {
    pub agent: String,
    /// Its samples, on the common clock, and how it ended.
    pub run: RoundRun,
    /// Its measured phase, seconds, as it timed it (none when it could not say).
    pub duration_s: Option<f64>,
}

/// Each agent's round: `base` with its share of the requests, its part of the load and
/// the common start on its own clock.
pub fn requests(base: &RoundRequest, agents: &[&AgentClient]) -> Vec<RoundRequest> {
    let count = agents.len() as u32;
    let slowest_rtt_ms = agents
        .iter()
        .filter_map(|a| a.measured_clock())
        .map(|c| c.rtt_ms)
        .fold(0.0, f64::max);
    let start_us = crate::agents::client::now_us()
        + START_LEAD.as_micros() as i64
        + (slowest_rtt_ms * 1000.0) as i64;
    agents
        .iter()
        .zip(0..)
        .map(|(a, index)| {
            let offset_us = a
                .measured_clock()
                .map_or(0, |c| (c.offset_ms * 1000.0) as i64);
            RoundRequest {
                load: base.load.share(index, count),
                share: Some(Share { index, count }),
                start_at_us: Some(start_us + offset_us),
                ..base.clone()
            }
        })
        .collect()
}

/// Runs the round on every agent at once; each agent's part (merge them with [`merge`]).
/// The observer sees one round: records (on the common clock) and samples as they come,
/// one `Started` (all agents' totals) and progress summed over the agents; `kept` says
/// whether it could keep them (see [`AgentClient::run_round`]).
pub async fn run_round(
    agents: &[&AgentClient],
    reqs: &[RoundRequest],
    cancel: &CancellationToken,
    scenario: &Scenario,
    round: u32,
    obs: &mut dyn Observer,
    kept: &std::cell::Cell<bool>,
) -> Vec<Part> {
    let shared = Shared::new(obs);
    let merger = std::cell::RefCell::new(Merger::new(reqs));
    let runs = agents.iter().zip(reqs).enumerate().map(|(i, (a, req))| {
        let (mut tap, merger) = (shared.tap(), &merger);
        async move {
            let run = a
                .run_round(req, cancel, |e| {
                    let out = merger.borrow_mut().pass(i, e);
                    let event = match &out {
                        Pass::Same => &*e,
                        Pass::This(own) => own,
                        Pass::Nothing => return kept.get(),
                    };
                    tap.on(&RunEvent::Round {
                        scenario,
                        round,
                        event,
                    });
                    kept.get()
                })
                .await;
            if let RoundEnd::Failed(e) = &run.end {
                tap.on(&RunEvent::PartFailed {
                    scenario,
                    round,
                    agent: a.name(),
                    error: e.to_string(),
                });
            }
            run
        }
    });
    let runs = futures_util::future::join_all(runs).await;
    agents
        .iter()
        .zip(reqs)
        .zip(runs)
        .map(|((a, req), run)| part(a.name(), req, run))
        .collect()
}

/// What the observer is told of one agent's event.
enum Pass {
    Same,
    This(Box<RoundEvent>),
    Nothing,
}

/// Turns the agents' streams into one for the observer.
struct Merger {
    /// Each agent's common start on its own clock (µs since the Unix epoch).
    start_at_us: Vec<Option<i64>>,
    started: Vec<Option<RoundStarted>>,
    progress: Vec<Progress>,
}

impl Merger {
    fn new(reqs: &[RoundRequest]) -> Merger {
        Merger {
            start_at_us: reqs.iter().map(|r| r.start_at_us).collect(),
            started: vec![None; reqs.len()],
            progress: vec![Progress::default(); reqs.len()],
        }
    }

    /// Agent `i`'s round zero on the common clock, once its `Started` came.
    fn zero_ms(&self, i: usize) -> Option<f64> {
        let anchor = self.started[i]?.wall_clock_anchor_us;
        Some((self.start_at_us[i]? - anchor) as f64 / 1000.0)
    }

    fn pass(&mut self, i: usize, e: &mut RoundEvent) -> Pass {
        match e {
            RoundEvent::Record(r) => {
                if let Some(zero) = self.zero_ms(i) {
                    r.rebase(zero);
                }
                Pass::Same
            }
            RoundEvent::Telemetry(_)
            | RoundEvent::EngineDown(_)
            | RoundEvent::EngineRestarted(_) => Pass::Same,
            RoundEvent::Started(s) => {
                self.started[i] = Some(*s);
                if self.started.iter().any(Option::is_none) {
                    return Pass::Nothing;
                }
                let all = self.started.iter().flatten();
                let total = if all.clone().any(|s| s.total_requests == 0) {
                    0
                } else {
                    all.clone().map(|s| s.total_requests).sum()
                };
                Pass::This(Box::new(RoundEvent::Started(RoundStarted {
                    total_requests: total,
                    wall_clock_anchor_us: all.map(|s| s.wall_clock_anchor_us).min().unwrap_or(0),
                })))
            }
            RoundEvent::Progress(p) => {
                self.progress[i] = *p;
                let sum = |f: fn(&Progress) -> u32| self.progress.iter().map(f).sum();
                Pass::This(Box::new(RoundEvent::Progress(Progress {
                    completed: sum(|p| p.completed),
                    failed: sum(|p| p.failed),
                    in_flight: sum(|p| p.in_flight),
                    total: sum(|p| p.total),
                })))
            }
            // The merged round's end is told once, by the session.
            RoundEvent::Finished(_) => Pass::Nothing,
        }
    }
}

/// One agent's run, its samples moved onto the common clock: their times become ms from
/// the shared start (its round's zero was earlier, by the time it took to get there).
fn part(agent: &str, req: &RoundRequest, mut run: RoundRun) -> Part {
    if let (Some(anchor), Some(start)) = (run.anchor_us, req.start_at_us) {
        let zero_ms = (start - anchor) as f64 / 1000.0;
        for t in &mut run.telemetry {
            t.t_ms -= zero_ms;
        }
    }
    let duration_s = match &run.end {
        RoundEnd::Finished(f) => Some(f.duration_ms / 1000.0),
        _ => None,
    };
    Part {
        agent: agent.to_owned(),
        run,
        duration_s,
    }
}

/// The merged round, from the parts (their samples move into it): it failed
/// when any agent's did (the others' records are kept), was cancelled when any was; its
/// measured phase is the union of the agents' (from the earliest start to the latest end
/// on the common clock).
pub fn merge(mut parts: Vec<Part>) -> RoundRun {
    let mut merged = RoundRun {
        telemetry: parts
            .iter_mut()
            .flat_map(|p| std::mem::take(&mut p.run.telemetry))
            .collect(),
        end: RoundEnd::Cancelled,
        anchor_us: parts.iter().filter_map(|p| p.run.anchor_us).min(),
        resumed: parts
            .iter()
            .flat_map(|p| p.run.resumed.iter().map(|r| format!("{}: {r}", p.agent)))
            .collect(),
        engine: parts
            .iter_mut()
            .flat_map(|p| std::mem::take(&mut p.run.engine))
            .collect(),
    };
    merged.telemetry.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    let failed = parts.iter().find_map(|p| match &p.run.end {
        RoundEnd::Failed(e) => Some(e.clone()),
        _ => None,
    });
    let finished: Vec<&RoundFinished> = parts
        .iter()
        .filter_map(|p| match &p.run.end {
            RoundEnd::Finished(f) => Some(f),
            _ => None,
        })
        .collect();
    merged.end = if let Some(e) = failed {
        RoundEnd::Failed(e)
    } else if finished.len() < parts.len() {
        RoundEnd::Cancelled
    } else {
        let start = finished
            .iter()
            .map(|f| f.start_late_ms)
            .fold(f64::INFINITY, f64::min);
        let end = finished
            .iter()
            .map(|f| f.start_late_ms + f.duration_ms)
            .fold(0.0, f64::max);
        RoundEnd::Finished(RoundFinished {
            duration_ms: (end - start).max(0.0),
            sent: finished.iter().map(|f| f.sent).sum(),
            health: worst_health(finished.iter().filter_map(|f| f.health.as_ref())),
            cancelled: false,
            start_late_ms: finished.iter().map(|f| f.start_late_ms).fold(0.0, f64::max),
            stop_reason: None,
        })
    };
    merged
}

/// The health of the agent that struggled most: a saturated one first, else the one whose
/// event loop lagged most.
fn worst_health<'a>(all: impl Iterator<Item = &'a AgentHealth>) -> Option<AgentHealth> {
    all.max_by(|a, b| {
        (a.generator_saturated, a.event_loop_lag_p99_ms)
            .partial_cmp(&(b.generator_saturated, b.event_loop_lag_p99_ms))
            .unwrap_or(std::cmp::Ordering::Equal)
    })
    .cloned()
}
