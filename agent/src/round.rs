//! The load engine: one round of a scenario, released as its load shape says (closed loop
//! of `concurrency` in flight, or open-loop arrivals with an optional cap), streaming one
//! record per request as it ends.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvbench_common::agent::{Progress, RoundEvent, RoundFinished, RoundStarted};
use kvbench_common::load::{Arrivals, LoadSpec, Schedule};
use kvbench_common::plan::ApiFlavor;
use kvbench_common::record::{Outcome, RequestRecord};
use kvbench_common::tokenizer::TokenCounter;
use kvbench_common::workload::{generate_pool, warmup, Conversation, WorkloadSpec};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{self, Call, HttpClient};
use crate::health;
use crate::EventTx;

/// One round to run, in domain types.
#[derive(Clone)]
pub struct RoundSpec {
    pub scenario_id: String,
    pub scenario_name: String,
    pub round: u32,
    pub workload: WorkloadSpec,
    pub load: LoadSpec,
    pub model: String,
    pub api: ApiFlavor,
    pub enforce_output_length: bool,
    /// A dataset's requests, instead of generated ones.
    pub dataset: Option<Vec<Conversation>>,
    /// Whose tokens generated lengths and `prompt_tokens_client` are in.
    pub counter: Arc<dyn TokenCounter>,
}

/// One scenario run's replies by `(conversation, turn)`.
type Replies = HashMap<(u32, u32), String>;

/// Round 1's replies per scenario run, so that later rounds resend the same history.
#[derive(Debug, Default)]
pub struct ReplyStore {
    inner: Mutex<(HashMap<String, Replies>, VecDeque<String>)>,
}

/// Scenario runs whose replies are kept (oldest dropped first).
const KEPT_SCENARIOS: usize = 32;

impl ReplyStore {
    fn put(&self, scenario: &str, key: (u32, u32), text: String) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *g;
        if !map.contains_key(scenario) {
            order.push_back(scenario.to_owned());
            if order.len() > KEPT_SCENARIOS {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        map.entry(scenario.to_owned())
            .or_default()
            .insert(key, text);
    }

    fn get(&self, scenario: &str, key: (u32, u32)) -> Option<String> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.get(scenario).and_then(|m| m.get(&key)).cloned()
    }
}

#[derive(Debug, Default)]
struct Counts {
    completed: AtomicU32,
    failed: AtomicU32,
    in_flight: AtomicU32,
    /// Gaps between content chunks of measured requests, and those of them too short for
    /// two engine steps (both chunks came out of one read).
    gaps: std::sync::atomic::AtomicU64,
    coalesced_gaps: std::sync::atomic::AtomicU64,
    /// The beginnings of this round's prompts so far (see `first_touch`).
    seen_heads: Mutex<std::collections::HashSet<String>>,
    probe_taken: std::sync::atomic::AtomicBool,
}

/// Characters of a prompt's content that decide `first_touch`: two prompts that differ
/// here differ within any engine's first KV block, so they cannot share a cached prefix.
const HEAD_CHARS: usize = 24;

/// A prompt the agent can send again after a clear, to check the cache is cold.
#[derive(Debug, Clone)]
pub struct Probe {
    pub messages: Vec<(String, String)>,
    pub api: ApiFlavor,
    pub model: String,
}

/// What every request of the round shares.
pub struct RoundContext {
    /// The first prompt of the latest round, for the next clear's cold check.
    pub probe: Arc<Mutex<Option<Probe>>>,
    pub client: HttpClient,
    pub base_url: Arc<str>,
    pub agent_name: Arc<str>,
    pub replies: Arc<ReplyStore>,
    pub telemetry: crate::telemetry::Telemetry,
}

/// Hands out the round's conversations: the request set, or (for a round limited by
/// duration) pool after pool of fresh ones.
struct Feeder {
    workload: WorkloadSpec,
    counter: Arc<dyn TokenCounter>,
    round: u32,
    endless: bool,
    pool: u32,
    next_id: u32,
    next_conv: u32,
    queue: VecDeque<Conversation>,
}

impl Feeder {
    fn next(&mut self) -> Option<Conversation> {
        if self.queue.is_empty() && (self.pool == 0 || self.endless) {
            let w = generate_pool(
                &self.workload,
                self.round,
                self.pool,
                self.next_id,
                self.next_conv,
                &*self.counter,
            );
            self.pool += 1;
            self.next_id += w.total_requests();
            self.next_conv += w.conversations.len() as u32;
            self.queue.extend(w.conversations);
        }
        self.queue.pop_front()
    }
}

/// Runs a round, sending events to `tx`. Stops sending load when `tx`'s receiver is gone
/// (the coordinator left) or `cancel` fires.
pub async fn run(ctx: RoundContext, spec: RoundSpec, tx: EventTx, cancel: CancellationToken) {
    let t0 = Instant::now();
    let anchor_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    let load = spec.load.clone();
    let total = if load.duration_s.is_some() {
        0
    } else {
        spec.workload.num_requests
    };
    let started = RoundStarted {
        total_requests: total,
        wall_clock_anchor_us: anchor_us,
    };
    if tx.send(RoundEvent::Started(started)).await.is_err() {
        return;
    }
    let ctx = Arc::new(ctx);

    let background = cancel.child_token();
    let counts = Arc::new(Counts::default());
    let ticker = {
        let (tx, counts, stop) = (tx.clone(), counts.clone(), background.clone());
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
    };

    let spec = Arc::new(spec);
    let runner = |warmup: bool| Runner {
        ctx: ctx.clone(),
        spec: spec.clone(),
        tx: tx.clone(),
        cancel: cancel.clone(),
        counts: counts.clone(),
        t0,
        warmup,
    };

    // Warmups first, closed loop, excluded from statistics.
    if load.warmup_requests > 0 {
        let width = match load.arrivals {
            Arrivals::Closed { concurrency } => concurrency,
            Arrivals::Open {
                max_concurrency, ..
            } => max_concurrency.unwrap_or(8),
        };
        let w = warmup(&spec.workload, load.warmup_requests);
        let queue = Arc::new(Mutex::new(
            w.conversations.into_iter().collect::<VecDeque<_>>(),
        ));
        let mut set = JoinSet::new();
        for _ in 0..width.clamp(1, load.warmup_requests) {
            let (r, queue) = (runner(true), queue.clone());
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

    // Connections for the first wave are opened before the clock starts: connection setup
    // is the client's cost, not the engine's.
    let width = match load.arrivals {
        Arrivals::Closed { concurrency } => concurrency.min(spec.workload.num_requests.max(1)),
        Arrivals::Open {
            max_concurrency, ..
        } => max_concurrency.unwrap_or(0),
    };
    if width > 1 {
        client::prewarm(&ctx.client, &ctx.base_url, width as usize).await;
    }

    // The measured phase. Telemetry starts and ends with it (a sample of every source at
    // each end), so that per-round deltas of counters cover exactly the measured requests.
    let sampling = ctx.telemetry.start(tx.clone(), t0).await;
    let lag_stop = background.child_token();
    let lag_probe = health::lag_probe(lag_stop.clone());
    let cpu_before = health::cpu_seconds();
    let host_before = health::host_cpu_jiffies();
    let measure_start = Instant::now();
    let deadline = load
        .duration_s
        .map(|d| measure_start + Duration::from_secs_f64(d));
    let trace = spec
        .dataset
        .as_ref()
        .is_some_and(|d| d.iter().any(|c| c.due_ms.is_some()));
    let feeder = Arc::new(Mutex::new(Feeder {
        workload: spec.workload.clone(),
        counter: spec.counter.clone(),
        round: spec.round,
        endless: load.duration_s.is_some() && spec.dataset.is_none(),
        // A dataset is the whole request set: no generated pool follows it.
        pool: u32::from(spec.dataset.is_some()),
        next_id: 0,
        next_conv: 0,
        queue: spec.dataset.clone().unwrap_or_default().into(),
    }));
    let next_conv = move || feeder.lock().ok().and_then(|mut f| f.next());
    let mut dispatch_lags = Vec::new();
    let mut set = JoinSet::new();
    // Open loops and traces release each conversation at an offset from the start: the
    // schedule's, or the trace's own timestamps.
    let open = match load.arrivals {
        Arrivals::Closed { concurrency } if !trace => {
            for _ in 0..concurrency.max(1) {
                let (r, next_conv) = (runner(false), next_conv.clone());
                set.spawn(async move {
                    while deadline.is_none_or(|d| Instant::now() < d) {
                        let Some(conv) = next_conv() else { return };
                        if !r.conversation(conv, None, None).await {
                            return;
                        }
                    }
                });
            }
            None
        }
        Arrivals::Closed { .. } => Some((None, None)),
        Arrivals::Open {
            rate,
            burstiness,
            max_concurrency,
        } => {
            let count = load
                .duration_s
                .is_none()
                .then_some(spec.workload.num_requests);
            let schedule = (!trace).then(|| {
                Schedule::new(spec.workload.seed, rate, burstiness, count, load.duration_s)
            });
            Some((schedule, max_concurrency))
        }
    };
    if let Some((mut schedule, max_concurrency)) = open {
        let cap = max_concurrency.map(|m| Arc::new(Semaphore::new(m as usize)));
        loop {
            let release = match schedule.as_mut() {
                Some(s) => {
                    let offset = s.next_offset();
                    next_conv().map(|c| (offset, c))
                }
                None => next_conv().map(|c| (c.due_ms.unwrap_or(0.0).max(0.0) / 1000.0, c)),
            };
            let Some((offset, conv)) = release else { break };
            if load.duration_s.is_some_and(|d| offset >= d) {
                break;
            }
            let at = measure_start + Duration::from_secs_f64(offset);
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = cancel.cancelled() => break,
            }
            dispatch_lags.push(Instant::now().saturating_duration_since(at).as_secs_f64() * 1000.0);
            let (r, cap) = (runner(false), cap.clone());
            set.spawn(async move {
                r.conversation(conv, Some(at), cap).await;
            });
        }
    }
    while set.join_next().await.is_some() {}
    let duration_s = measure_start.elapsed().as_secs_f64();
    let cpu = match (cpu_before, health::cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    lag_stop.cancel();
    let lags = lag_probe.await.unwrap_or_default();
    background.cancel();
    let _ = ticker.await;
    if cancel.is_cancelled() {
        return;
    }
    sampling.stop().await;
    let host = health::host_cpu_share(host_before, health::host_cpu_jiffies());
    let (gaps, coalesced) = (
        counts.gaps.load(Ordering::Relaxed),
        counts.coalesced_gaps.load(Ordering::Relaxed),
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
        tracing::warn!(scenario = %spec.scenario_name, round = spec.round, reason = %health.saturation_reason, "generator saturated");
    }
    let c = &counts;
    let (completed, failed) = (
        c.completed.load(Ordering::Relaxed),
        c.failed.load(Ordering::Relaxed),
    );
    let _ = tx
        .send(RoundEvent::Progress(Progress {
            completed,
            failed,
            in_flight: 0,
            total,
        }))
        .await;
    let _ = tx
        .send(RoundEvent::Finished(RoundFinished {
            duration_ms: duration_s * 1000.0,
            sent: completed + failed,
            health: Some(health),
        }))
        .await;
}

/// Runs conversations and streams their records.
struct Runner {
    ctx: Arc<RoundContext>,
    spec: Arc<RoundSpec>,
    tx: EventTx,
    cancel: CancellationToken,
    counts: Arc<Counts>,
    t0: Instant,
    warmup: bool,
}

impl Runner {
    fn ms(&self, t: Instant) -> f64 {
        // Instants before the round's zero (none, in practice) clamp to 0.
        t.saturating_duration_since(self.t0).as_secs_f64() * 1000.0
    }

    /// Runs one conversation's turns in order; false when the round is cancelled. The
    /// first turn was due at `first_due` (open loop); every turn waits for a slot of `cap`.
    async fn conversation(
        &self,
        conv: Conversation,
        first_due: Option<Instant>,
        cap: Option<Arc<Semaphore>>,
    ) -> bool {
        let spec = &*self.spec;
        let mut messages: Vec<(String, String)> = Vec::new();
        if let Some(s) = &conv.system {
            messages.push(("system".into(), s.clone()));
        }
        messages.extend(conv.prefix.iter().cloned());
        for (t, user) in conv.user_turns.iter().enumerate() {
            let turn = t as u32;
            messages.push(("user".into(), user.clone()));
            if t > 0 && conv.think_time_ms > 0 {
                let think = Duration::from_millis(u64::from(conv.think_time_ms));
                tokio::select! {
                    _ = tokio::time::sleep(think) => {}
                    _ = self.cancel.cancelled() => return false,
                }
            }
            let scheduled = match first_due {
                Some(due) if t == 0 => due,
                _ => Instant::now(),
            };
            let _permit = match &cap {
                Some(sem) => tokio::select! {
                    p = sem.clone().acquire_owned() => p.ok(),
                    _ = self.cancel.cancelled() => return false,
                },
                None => None,
            };
            let queue_ms = Instant::now()
                .saturating_duration_since(scheduled)
                .as_secs_f64()
                * 1000.0;
            let call = Call {
                base_url: &self.ctx.base_url,
                api: spec.api,
                model: &spec.model,
                messages: &messages,
                max_tokens: conv
                    .max_tokens
                    .get(t)
                    .copied()
                    .unwrap_or(spec.workload.output_tokens),
                enforce_output_length: spec.enforce_output_length,
                ttft_timeout: Duration::from_secs_f64(spec.load.ttft_timeout_s),
                idle_timeout: Duration::from_secs_f64(spec.load.idle_timeout_s),
            };
            let mut first_touch = false;
            if !self.warmup {
                self.counts.in_flight.fetch_add(1, Ordering::Relaxed);
                let head: String = messages
                    .iter()
                    .flat_map(|(_, c)| c.chars())
                    .take(HEAD_CHARS)
                    .collect();
                first_touch = self
                    .counts
                    .seen_heads
                    .lock()
                    .map(|mut s| s.insert(head))
                    .unwrap_or(false);
                if !self.counts.probe_taken.swap(true, Ordering::Relaxed) {
                    if let Ok(mut p) = self.ctx.probe.lock() {
                        *p = Some(Probe {
                            messages: messages.clone(),
                            api: spec.api,
                            model: spec.model.clone(),
                        });
                    }
                }
            }
            let reply = tokio::select! {
                r = client::send(&self.ctx.client, &call) => r,
                _ = self.cancel.cancelled() => return false,
            };
            if !self.warmup {
                self.counts.in_flight.fetch_sub(1, Ordering::Relaxed);
                let counter = if reply.outcome == Outcome::Ok {
                    &self.counts.completed
                } else {
                    &self.counts.failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let gaps = reply.chunks.len().saturating_sub(1) as u64;
                let coalesced = reply
                    .chunks
                    .windows(2)
                    .filter(|w| w[1].saturating_duration_since(w[0]) < health::COALESCED_GAP)
                    .count() as u64;
                self.counts.gaps.fetch_add(gaps, Ordering::Relaxed);
                self.counts
                    .coalesced_gaps
                    .fetch_add(coalesced, Ordering::Relaxed);
            }
            let record = RequestRecord {
                scenario: spec.scenario_name.clone(),
                round: spec.round,
                agent: self.ctx.agent_name.to_string(),
                request_id: conv.first_request_id + turn,
                conversation_id: conv.id,
                turn,
                warmup: self.warmup,
                scheduled_ms: self.ms(scheduled),
                queue_ms,
                sent_ms: self.ms(reply.sent),
                first_byte_ms: reply.first_byte.map(|t| self.ms(t)),
                first_token_ms: reply.first_token.map(|t| self.ms(t)),
                chunk_offsets_ms: reply
                    .chunks
                    .iter()
                    .map(|c| c.saturating_duration_since(reply.sent).as_secs_f64() * 1000.0)
                    .collect(),
                end_ms: self.ms(reply.end),
                prompt_tokens_client: messages
                    .iter()
                    .map(|(_, c)| spec.counter.count(c) as u32)
                    .sum(),
                prompt_tokens: reply.prompt_tokens,
                output_tokens: reply.output_tokens,
                output_chunks: reply.chunks.len() as u32,
                cached_tokens: reply.cached_tokens,
                finish_reason: reply.finish_reason.clone(),
                engine_ttft_ms: reply.engine_ttft_us.map(|us| us as f64 / 1000.0),
                first_touch,
                outcome: reply.outcome,
                error: reply.error.clone(),
                http_status: reply.http_status,
            };
            if self.tx.send(RoundEvent::Record(record)).await.is_err() {
                self.cancel.cancel();
                return false;
            }
            if t + 1 < conv.user_turns.len() {
                // The history carries the engine's actual reply; later rounds resend round
                // 1's, so every round sends identical prompts.
                let key = (conv.id, turn);
                let text = if spec.round == 1 {
                    self.ctx
                        .replies
                        .put(&spec.scenario_id, key, reply.text.clone());
                    reply.text
                } else {
                    self.ctx
                        .replies
                        .get(&spec.scenario_id, key)
                        .unwrap_or(reply.text)
                };
                messages.push(("assistant".into(), text));
            }
        }
        true
    }
}
