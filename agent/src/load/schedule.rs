//! A round's schedule: its measured phase released as the load shape says (closed loop of
//! `concurrency` in flight, or open-loop arrivals with an optional cap), with progress
//! every 250 ms and the agent watching its own delay.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvbench_common::agent::{Progress, RoundEvent};
use kvbench_common::load::{Arrivals, Schedule};
use kvbench_common::workload::warmup;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::feeder::Feeder;
use super::record::ms_since;
use super::runner::Runner;
use super::{Counts, RoundContext, RoundSpec};
use crate::telemetry::host as health;
use crate::EventTx;

/// Sends the round's counts every 250 ms until `stop`.
pub(crate) fn progress_ticker(
    tx: EventTx,
    counts: Arc<Counts>,
    total: u32,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut iv = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = iv.tick() => {}
                _ = stop.cancelled() => return,
            }
            let p = Progress {
                completed: counts.completed.load(Ordering::Relaxed),
                failed: counts.failed.load(Ordering::Relaxed),
                in_flight: counts.in_flight.load(Ordering::Relaxed),
                total,
            };
            if tx.send(RoundEvent::Progress(p)).await.is_err() {
                return;
            }
        }
    })
}

/// What the measured phase gives besides its records.
pub(crate) struct Measured {
    pub(crate) duration_s: f64,
    pub(crate) health: kvbench_common::results::AgentHealth,
}

/// One round's shared state, from which its workers are made.
pub(crate) struct Round {
    pub(crate) ctx: Arc<RoundContext>,
    pub(crate) spec: Arc<RoundSpec>,
    pub(crate) tx: EventTx,
    pub(crate) cancel: CancellationToken,
    pub(crate) counts: Arc<Counts>,
    pub(crate) t0: Instant,
    /// Requests of this agent's request set (0: limited by duration).
    pub(crate) total: u32,
    pub(crate) feeder: Arc<Mutex<Feeder>>,
}

impl Round {
    pub(crate) fn runner(self: &Arc<Self>, warmup: bool) -> Runner {
        Runner {
            round: self.clone(),
            warmup,
        }
    }

    /// Workers of a closed loop: never more than there are requests to send (a round
    /// limited by duration sends as many as its concurrency allows).
    pub(crate) fn closed_workers(&self, concurrency: u32) -> u32 {
        let c = concurrency.max(1);
        if self.spec.request.load.duration_s.is_some() {
            c
        } else {
            c.min(self.total.max(1))
        }
    }

    /// Requests the first wave sends at once.
    pub(crate) fn first_wave(&self) -> u32 {
        match self.spec.request.load.arrivals {
            Arrivals::Closed { concurrency } => self.closed_workers(concurrency),
            Arrivals::Open {
                max_concurrency, ..
            } => max_concurrency.unwrap_or(0),
        }
    }

    /// Warmup requests, closed loop, excluded from statistics.
    pub(crate) async fn warmup(self: &Arc<Self>) {
        let n = self.spec.request.load.warmup_requests;
        if n == 0 {
            return;
        }
        let width = match self.spec.request.load.arrivals {
            Arrivals::Closed { concurrency } => concurrency,
            Arrivals::Open {
                max_concurrency, ..
            } => max_concurrency.unwrap_or(8),
        };
        let w = warmup(&self.spec.request.workload, n);
        let queue = Arc::new(Mutex::new(
            w.conversations.into_iter().collect::<VecDeque<_>>(),
        ));
        let mut set = JoinSet::new();
        for _ in 0..width.clamp(1, n) {
            let (r, queue) = (self.runner(true), queue.clone());
            set.spawn(async move {
                loop {
                    let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                    let Some(conv) = next else { return };
                    if !r.conversation(conv, None, None).await {
                        return;
                    }
                }
            });
        }
        while set.join_next().await.is_some() {}
    }

    /// The measured phase. Telemetry starts and ends with it (a sample of every source at
    /// each end), so that per-round deltas of counters cover exactly the measured requests.
    pub(crate) async fn measure(self: &Arc<Self>) -> Measured {
        let sampling = self.ctx.telemetry.start(self.tx.clone(), self.t0).await;
        let lag_stop = self.cancel.child_token();
        let lag_probe = health::lag_probe(lag_stop.clone());
        let cpu_before = kvbench_common::process::cpu_seconds();
        let host_cpu = health::HostCpu::start();
        let start = Instant::now();
        let feeder = self.feeder.clone();
        let trace = self
            .spec
            .dataset
            .as_ref()
            .is_some_and(|d| d.iter().any(|c| c.due_ms.is_some()));
        let mut set = JoinSet::new();
        let dispatch_lags = match self.spec.request.load.arrivals {
            Arrivals::Closed { concurrency } if !trace => {
                self.closed_loop(concurrency, start, feeder, &mut set);
                Vec::new()
            }
            Arrivals::Closed { .. } => self.release(None, None, start, feeder, &mut set).await,
            Arrivals::Open {
                rate,
                burstiness,
                max_concurrency,
            } => {
                // The rate counts requests; conversations (whose later turns follow their
                // replies) are released at rate x conversations / requests, and a ramp
                // follows the share of conversations released.
                let (conversations, requests) =
                    feeder.lock().map(|mut f| f.request_set()).unwrap_or((1, 1));
                let per_request = f64::from(conversations.max(1)) / f64::from(requests.max(1));
                let load = &self.spec.request.load;
                let count = load.duration_s.is_none().then_some(conversations);
                // Each agent of a split scenario draws its own arrivals.
                let seed =
                    self.spec
                        .request
                        .share
                        .map_or(self.spec.request.workload.seed, |s| {
                            self.spec.request.workload.seed.wrapping_add(
                                u64::from(s.index).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                            )
                        });
                let schedule = (!trace).then(|| {
                    Schedule::new(
                        seed,
                        rate.scaled(per_request),
                        burstiness,
                        count,
                        load.duration_s,
                    )
                });
                self.release(schedule, max_concurrency, start, feeder, &mut set)
                    .await
            }
        };
        while set.join_next().await.is_some() {}
        let duration_s = start.elapsed().as_secs_f64();
        let cpu = match (cpu_before, kvbench_common::process::cpu_seconds()) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        lag_stop.cancel();
        let lags = lag_probe.await.unwrap_or_default();
        sampling.stop().await;
        let host = host_cpu.share();
        let (gaps, coalesced) = (
            self.counts.gaps.load(Ordering::Relaxed),
            self.counts.coalesced_gaps.load(Ordering::Relaxed),
        );
        let coalesced_share =
            (gaps >= health::COALESCE_MIN_GAPS).then(|| coalesced as f64 / gaps as f64);
        let health = health::assess(
            &lags,
            &dispatch_lags,
            cpu,
            host,
            coalesced_share,
            duration_s,
        );
        if health.generator_saturated {
            tracing::info!(scenario = %self.spec.request.scenario_name, round = self.spec.request.round, reason = %health.saturation_reason, "generator saturated");
        }
        Measured { duration_s, health }
    }

    /// A closed loop: each worker sends its next conversation when the last one ended.
    pub(crate) fn closed_loop(
        self: &Arc<Self>,
        concurrency: u32,
        start: Instant,
        feeder: Arc<Mutex<Feeder>>,
        set: &mut JoinSet<()>,
    ) {
        let deadline = self
            .spec
            .request
            .load
            .duration_s
            .map(|d| start + Duration::from_secs_f64(d));
        for _ in 0..self.closed_workers(concurrency) {
            let (r, feeder) = (self.runner(false), feeder.clone());
            set.spawn(async move {
                while deadline.is_none_or(|d| Instant::now() < d) {
                    let next = feeder.lock().ok().and_then(|mut f| f.next());
                    let Some(conv) = next else { return };
                    if !r.conversation(conv, None, None).await {
                        return;
                    }
                }
            });
        }
    }

    /// Releases each conversation at its offset from `start`: the schedule's, or (none)
    /// the trace's own timestamps; at most `max_concurrency` in flight. Returns how late
    /// each release was, in ms.
    pub(crate) async fn release(
        self: &Arc<Self>,
        mut schedule: Option<Schedule>,
        max_concurrency: Option<u32>,
        start: Instant,
        feeder: Arc<Mutex<Feeder>>,
        set: &mut JoinSet<()>,
    ) -> Vec<f64> {
        let cap = max_concurrency.map(|m| Arc::new(Semaphore::new(m as usize)));
        let mut lags = Vec::new();
        loop {
            let next = feeder.lock().ok().and_then(|mut f| f.next());
            let release = match schedule.as_mut() {
                Some(s) => {
                    let offset = s.next_offset();
                    next.map(|c| (offset, c))
                }
                None => next.map(|c| (c.due_ms.unwrap_or(0.0).max(0.0) / 1000.0, c)),
            };
            let Some((offset, conv)) = release else { break };
            if self
                .spec
                .request
                .load
                .duration_s
                .is_some_and(|d| offset >= d)
            {
                break;
            }
            let at = start + Duration::from_secs_f64(offset);
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = self.cancel.cancelled() => break,
            }
            lags.push(ms_since(at, Instant::now()));
            let (r, cap) = (self.runner(false), cap.clone());
            set.spawn(async move {
                r.conversation(conv, Some(at), cap).await;
            });
        }
        lags
    }
}
