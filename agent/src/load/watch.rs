//! The engine, watched while a round runs. A request that fails the way an engine's death
//! makes requests fail (refused, reset, cut off, timed out, 5xx) sets off a health check;
//! the health URL failing [`CHECKS`] times in a row, [`CHECK_GAP`] apart, means the engine
//! is down. The round then says so once (`EngineDown`), and where the agent restarts
//! engines on failure (`on_engine_failure: restart`) its load stops: what it would measure
//! next is an engine being restarted, not the one the round is about.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvbench_common::agent::{EngineDown, RoundEvent, StopReason};
use kvbench_common::record::Outcome;

use super::schedule::Round;

/// Health checks that must all fail before the engine counts as down.
pub(crate) const CHECKS: u32 = 3;
/// Between two health checks.
pub(crate) const CHECK_GAP: Duration = Duration::from_millis(500);
/// What one health check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One round's watch over its engine.
#[derive(Debug)]
pub(crate) struct EngineWatch {
    health_url: Arc<str>,
    /// Stop the round's load when the engine is down (the agent restarts it after).
    stop_when_down: bool,
    down: AtomicBool,
    /// Failures of the kinds an engine's death causes since the engine was last healthy.
    failures: Mutex<BTreeMap<Outcome, u32>>,
    /// The check running now, if one is: the round's end waits for it.
    check: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl EngineWatch {
    pub(crate) fn new(health_url: Arc<str>, stop_when_down: bool) -> EngineWatch {
        EngineWatch {
            health_url,
            stop_when_down,
            down: AtomicBool::new(false),
            failures: Mutex::default(),
            check: tokio::sync::Mutex::default(),
        }
    }

    /// Whether a request that ended so may mean the engine is gone.
    pub(crate) fn suspect(outcome: Outcome) -> bool {
        matches!(
            outcome,
            Outcome::ConnectError
                | Outcome::Reset
                | Outcome::StreamTruncated
                | Outcome::TtftTimeout
                | Outcome::IdleTimeout
                | Outcome::Http5xx
        )
    }

    /// A request of `round` ended with `outcome`: a suspect failure starts a health check,
    /// unless one is running or the engine was already found down.
    pub(crate) fn saw(self: &Arc<Self>, round: &Arc<Round>, outcome: Outcome) {
        if !Self::suspect(outcome) || self.down.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut f) = self.failures.lock() {
            *f.entry(outcome).or_default() += 1;
        }
        let Ok(mut check) = self.check.try_lock() else {
            return;
        };
        if check.as_ref().is_some_and(|c| !c.is_finished()) {
            return;
        }
        let (watch, round) = (self.clone(), round.clone());
        *check = Some(tokio::spawn(async move { watch.check(&round).await }));
    }

    /// Waits for a health check in progress (so that `EngineDown` comes before `Finished`).
    pub(crate) async fn settle(&self) {
        let running = self.check.lock().await.take();
        if let Some(c) = running {
            let _ = c.await;
        }
    }

    async fn check(&self, round: &Round) {
        let mut last = String::new();
        for i in 0..CHECKS {
            if i > 0 {
                tokio::time::sleep(CHECK_GAP).await;
            }
            match crate::engine::http::get(&round.ctx.client, &self.health_url, CHECK_TIMEOUT).await
            {
                Ok(_) => {
                    if let Ok(mut f) = self.failures.lock() {
                        f.clear();
                    }
                    return;
                }
                Err(e) => last = e.to_string(),
            }
        }
        self.down.store(true, Ordering::Relaxed);
        let failed = self
            .failures
            .lock()
            .map(|f| {
                f.iter()
                    .map(|(o, n)| format!("{n} {o}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let down = EngineDown {
            at_ms: round.t0.elapsed().as_secs_f64() * 1000.0,
            detail: format!(
                "requests failed ({failed}), then its health check failed {CHECKS} times {} ms apart: {last}",
                CHECK_GAP.as_millis()
            ),
            restarting: self.stop_when_down,
        };
        tracing::warn!(scenario = %round.spec.request.scenario_name, round = round.spec.request.round, detail = %down.detail, restarting = down.restarting, "the engine is down");
        let _ = round.tx.send(RoundEvent::EngineDown(down)).await;
        if self.stop_when_down {
            let _ = round.ctx.stop_reason.set(StopReason::EngineFailed);
            round.cancel.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_a_dead_engine_causes_are_suspect() {
        let suspect: Vec<Outcome> = Outcome::ALL
            .into_iter()
            .filter(|o| EngineWatch::suspect(*o))
            .collect();
        assert_eq!(
            suspect,
            [
                Outcome::ConnectError,
                Outcome::Http5xx,
                Outcome::TtftTimeout,
                Outcome::IdleTimeout,
                Outcome::StreamTruncated,
                Outcome::Reset
            ]
        );
    }
}
