//! The load engine: one round of a scenario, released as its load shape says (closed loop
//! of `concurrency` in flight, or open-loop arrivals with an optional cap), streaming one
//! record per request as it ends.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvbench_common::agent::{Progress, RoundEvent, RoundFinished, RoundStarted, Share};
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
    /// This agent's part of a split scenario (none: the whole request set).
    pub share: Option<Share>,
    /// Start the measured phase at this wall-clock time (µs since the Unix epoch).
    pub start_at_us: Option<i64>,
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
    /// This round's prompts (and histories) so far: what a cold engine may share.
    prefixes: Mutex<crate::prefix::PrefixTracker>,
    probe_taken: std::sync::atomic::AtomicBool,
}

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
    share: Option<Share>,
}

impl Feeder {
    /// Conversations and requests of the first request set (generating it if needed).
    fn request_set(&mut self) -> (u32, u32) {
        self.fill();
        let requests = self.queue.iter().map(|c| c.user_turns.len() as u32).sum();
        (self.queue.len() as u32, requests)
    }

    /// Generates the next pool when the queue is empty and one is due.
    fn fill(&mut self) {
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
            let first = self.next_conv;
            self.next_conv += w.conversations.len() as u32;
            let share = self.share;
            self.queue.extend(
                w.conversations
                    .into_iter()
                    .zip(first..)
                    .filter(|(_, at)| share.is_none_or(|s| s.owns(*at)))
                    .map(|(c, _)| c),
            );
        }
    }

    fn next(&mut self) -> Option<Conversation> {
        self.fill();
        self.queue.pop_front()
    }
}

/// Runs a round, sending events to `tx`: warmup requests (excluded from statistics), then
/// the measured phase, then `Finished` (with `cancelled` set when `cancel` fired: requests
/// in flight then end as `cancelled` records). Stops sending load when `tx`'s receiver is
/// gone (the coordinator left) or `cancel` fires.
pub async fn run(ctx: RoundContext, spec: RoundSpec, tx: EventTx, cancel: CancellationToken) {
    let t0 = Instant::now();
    let anchor_us = now_us();
    let feeder = feeder(&spec);
    let total = if spec.load.duration_s.is_some() {
        0
    } else if spec.share.is_some() {
        // This agent's share of the request set.
        feeder.lock().map(|mut f| f.request_set().1).unwrap_or(0)
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
    let counts = Arc::new(Counts::default());
    let background = cancel.child_token();
    let ticker = progress_ticker(tx.clone(), counts.clone(), total, background.clone());
    let round = Arc::new(Round {
        ctx: Arc::new(ctx),
        spec: Arc::new(spec),
        tx: tx.clone(),
        cancel: cancel.clone(),
        counts: counts.clone(),
        t0,
        total,
        feeder,
    });
    round.warmup().await;
    // Connections for the first wave are opened before the clock starts: connection setup
    // is the client's cost, not the engine's.
    let width = round.first_wave();
    if width > 1 {
        client::prewarm(&round.ctx.client, &round.ctx.base_url, width as usize).await;
    }
    let start_late_ms = match round.spec.start_at_us {
        Some(at) => wait_until(at, &cancel).await,
        None => 0.0,
    };
    let measured = round.measure().await;
    background.cancel();
    let _ = ticker.await;
    let (completed, failed) = (
        counts.completed.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
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
            duration_ms: measured.duration_s * 1000.0,
            sent: completed + failed,
            health: Some(measured.health),
            cancelled: cancel.is_cancelled(),
            start_late_ms,
        }))
        .await;
}

/// Microseconds since the Unix epoch on this host's wall clock.
pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Sleeps until the wall-clock time `at_us` (or `cancel`); how late that time already was,
/// in ms (0 when it was still ahead).
async fn wait_until(at_us: i64, cancel: &CancellationToken) -> f64 {
    let ahead_us = at_us - now_us();
    if ahead_us <= 0 {
        return -ahead_us as f64 / 1000.0;
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_micros(ahead_us as u64)) => {}
        _ = cancel.cancelled() => {}
    }
    0.0
}

/// Hands out a round's conversations: its request set (this agent's share of it), or
/// (for a round limited by duration) pool after pool of fresh ones.
fn feeder(spec: &RoundSpec) -> Arc<Mutex<Feeder>> {
    let share = spec.share;
    let dataset: VecDeque<Conversation> = spec
        .dataset
        .iter()
        .flatten()
        .zip(0u32..)
        .filter(|(_, at)| share.is_none_or(|s| s.owns(*at)))
        .map(|(c, _)| c.clone())
        .collect();
    Arc::new(Mutex::new(Feeder {
        workload: spec.workload.clone(),
        counter: spec.counter.clone(),
        round: spec.round,
        endless: spec.load.duration_s.is_some() && spec.dataset.is_none(),
        // A dataset is the whole request set: no generated pool follows it.
        pool: u32::from(spec.dataset.is_some()),
        next_id: 0,
        next_conv: 0,
        queue: dataset,
        share,
    }))
}

/// Sends the round's counts every 250 ms until `stop`.
fn progress_ticker(
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
struct Measured {
    duration_s: f64,
    health: kvbench_common::stats::AgentHealth,
}

/// One round's shared state, from which its workers are made.
struct Round {
    ctx: Arc<RoundContext>,
    spec: Arc<RoundSpec>,
    tx: EventTx,
    cancel: CancellationToken,
    counts: Arc<Counts>,
    t0: Instant,
    /// Requests of this agent's request set (0: limited by duration).
    total: u32,
    feeder: Arc<Mutex<Feeder>>,
}

impl Round {
    fn runner(self: &Arc<Self>, warmup: bool) -> Runner {
        Runner {
            round: self.clone(),
            warmup,
        }
    }

    /// Workers of a closed loop: never more than there are requests to send (a round
    /// limited by duration sends as many as its concurrency allows).
    fn closed_workers(&self, concurrency: u32) -> u32 {
        let c = concurrency.max(1);
        if self.spec.load.duration_s.is_some() {
            c
        } else {
            c.min(self.total.max(1))
        }
    }

    /// Requests the first wave sends at once.
    fn first_wave(&self) -> u32 {
        match self.spec.load.arrivals {
            Arrivals::Closed { concurrency } => self.closed_workers(concurrency),
            Arrivals::Open {
                max_concurrency, ..
            } => max_concurrency.unwrap_or(0),
        }
    }

    /// Warmup requests, closed loop, excluded from statistics.
    async fn warmup(self: &Arc<Self>) {
        let n = self.spec.load.warmup_requests;
        if n == 0 {
            return;
        }
        let width = match self.spec.load.arrivals {
            Arrivals::Closed { concurrency } => concurrency,
            Arrivals::Open {
                max_concurrency, ..
            } => max_concurrency.unwrap_or(8),
        };
        let w = warmup(&self.spec.workload, n);
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
    async fn measure(self: &Arc<Self>) -> Measured {
        let sampling = self.ctx.telemetry.start(self.tx.clone(), self.t0).await;
        let lag_stop = self.cancel.child_token();
        let lag_probe = health::lag_probe(lag_stop.clone());
        let cpu_before = health::cpu_seconds();
        let host_cpu = health::HostCpu::start();
        let start = Instant::now();
        let feeder = self.feeder.clone();
        let trace = self
            .spec
            .dataset
            .as_ref()
            .is_some_and(|d| d.iter().any(|c| c.due_ms.is_some()));
        let mut set = JoinSet::new();
        let dispatch_lags = match self.spec.load.arrivals {
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
                let load = &self.spec.load;
                let count = load.duration_s.is_none().then_some(conversations);
                // Each agent of a split scenario draws its own arrivals.
                let seed = self.spec.share.map_or(self.spec.workload.seed, |s| {
                    self.spec
                        .workload
                        .seed
                        .wrapping_add(u64::from(s.index).wrapping_mul(0x9E37_79B9_7F4A_7C15))
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
        let cpu = match (cpu_before, health::cpu_seconds()) {
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
            tracing::info!(scenario = %self.spec.scenario_name, round = self.spec.round, reason = %health.saturation_reason, "generator saturated");
        }
        Measured { duration_s, health }
    }

    /// A closed loop: each worker sends its next conversation when the last one ended.
    fn closed_loop(
        self: &Arc<Self>,
        concurrency: u32,
        start: Instant,
        feeder: Arc<Mutex<Feeder>>,
        set: &mut JoinSet<()>,
    ) {
        let deadline = self
            .spec
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
    async fn release(
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
            if self.spec.load.duration_s.is_some_and(|d| offset >= d) {
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

/// Runs conversations of its round and streams their records.
struct Runner {
    round: Arc<Round>,
    warmup: bool,
}

/// What a measured prompt shares with the prompts sent before it in the round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shared {
    /// It shares not even its first chunk: a cold engine can have none of it cached.
    first_touch: bool,
    /// Tokens (the client's count) of the shared prefix.
    tokens: u32,
}

/// What a record says besides the engine's reply.
#[derive(Debug, Clone)]
struct RecordContext<'a> {
    scenario: &'a str,
    round: u32,
    agent: &'a str,
    request_id: u32,
    conversation_id: u32,
    turn: u32,
    warmup: bool,
    /// What this prompt shares with those sent before it in the round (None: warmup).
    shared: Option<Shared>,
    /// The round's zero: every time in the record is relative to it.
    t0: Instant,
    /// When the load shape meant the request to go out.
    scheduled: Instant,
    queue_ms: f64,
    prompt_tokens_client: u32,
}

/// Milliseconds from `zero` to `t` (instants before the zero, none in practice, clamp to 0).
fn ms_since(zero: Instant, t: Instant) -> f64 {
    t.saturating_duration_since(zero).as_secs_f64() * 1000.0
}

/// One request's record: the reply's times on the round's clock, its counts and outcome.
fn build_record(c: &RecordContext<'_>, reply: &client::Reply) -> RequestRecord {
    RequestRecord {
        scenario: c.scenario.to_owned(),
        round: c.round,
        agent: c.agent.to_owned(),
        request_id: c.request_id,
        conversation_id: c.conversation_id,
        turn: c.turn,
        warmup: c.warmup,
        scheduled_ms: ms_since(c.t0, c.scheduled),
        queue_ms: c.queue_ms,
        sent_ms: ms_since(c.t0, reply.sent),
        first_byte_ms: reply.first_byte.map(|t| ms_since(c.t0, t)),
        first_token_ms: reply.first_token.map(|t| ms_since(c.t0, t)),
        chunk_offsets_ms: reply
            .chunks
            .iter()
            .map(|t| ms_since(reply.sent, *t))
            .collect(),
        end_ms: ms_since(c.t0, reply.end),
        prompt_tokens_client: c.prompt_tokens_client,
        prompt_tokens: reply.prompt_tokens,
        output_tokens: reply.output_tokens,
        output_chunks: reply.chunks.len() as u32,
        cached_tokens: reply.cached_tokens,
        finish_reason: reply.finish_reason.clone(),
        engine_ttft_ms: reply.engine_ttft_us.map(|us| us as f64 / 1000.0),
        first_touch: c.shared.is_some_and(|s| s.first_touch),
        shared_prefix_tokens: c.shared.map(|s| s.tokens),
        retried: reply.retried,
        outcome: reply.outcome,
        error: reply.error.clone(),
        http_status: reply.http_status,
    }
}

/// The messages a conversation starts with: its system prompt and earlier messages.
fn opening_messages(conv: &Conversation) -> Vec<(String, String)> {
    let mut messages = Vec::new();
    if let Some(s) = &conv.system {
        messages.push(("system".into(), s.clone()));
    }
    messages.extend(conv.prefix.iter().cloned());
    messages
}

impl Runner {
    /// Runs one conversation's turns in order; false when the round is cancelled. The
    /// first turn was due at `first_due` (open loop); every turn waits for a slot of `cap`.
    async fn conversation(
        &self,
        conv: Conversation,
        first_due: Option<Instant>,
        cap: Option<Arc<Semaphore>>,
    ) -> bool {
        let mut messages = opening_messages(&conv);
        for (t, user) in conv.user_turns.iter().enumerate() {
            messages.push(("user".into(), user.clone()));
            if t > 0 && !self.think(conv.think_time_ms).await {
                return false;
            }
            let scheduled = match first_due {
                Some(due) if t == 0 => due,
                _ => Instant::now(),
            };
            // queue_ms is the wait for a slot alone; a release that came late shows as
            // sent_ms - scheduled_ms - queue_ms, never as queueing.
            let waiting = Instant::now();
            let Some(_permit) = self.slot(cap.as_ref()).await else {
                return false;
            };
            let queue_ms = ms_since(waiting, Instant::now());
            let (reply, shared) = self.send(&messages, &conv, t).await;
            let cancelled = reply.outcome == Outcome::Cancelled;
            let record = build_record(
                &RecordContext {
                    scenario: &self.round.spec.scenario_name,
                    round: self.round.spec.round,
                    agent: &self.round.ctx.agent_name,
                    request_id: conv.first_request_id + t as u32,
                    conversation_id: conv.id,
                    turn: t as u32,
                    warmup: self.warmup,
                    shared,
                    t0: self.round.t0,
                    scheduled,
                    queue_ms,
                    prompt_tokens_client: messages
                        .iter()
                        .map(|(_, c)| self.round.spec.counter.count(c) as u32)
                        .sum(),
                },
                &reply,
            );
            if self
                .round
                .tx
                .send(RoundEvent::Record(record))
                .await
                .is_err()
            {
                self.round.cancel.cancel();
                return false;
            }
            if cancelled {
                return false;
            }
            if t + 1 < conv.user_turns.len() {
                let text = self.history_reply(conv.id, t as u32, reply.text);
                messages.push(("assistant".into(), text));
                if !self.warmup {
                    // The engine has processed the reply too: the next turn may reuse it.
                    if let Ok(mut p) = self.round.counts.prefixes.lock() {
                        p.insert(&crate::prefix::render(&messages));
                    }
                }
            }
        }
        true
    }

    /// Waits between turns; false when the round is cancelled meanwhile.
    async fn think(&self, think_time_ms: u32) -> bool {
        if think_time_ms == 0 {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(u64::from(think_time_ms))) => true,
            _ = self.round.cancel.cancelled() => false,
        }
    }

    /// A slot of `cap` (no cap: at once); None when the round is cancelled meanwhile.
    async fn slot(
        &self,
        cap: Option<&Arc<Semaphore>>,
    ) -> Option<Option<tokio::sync::OwnedSemaphorePermit>> {
        match cap {
            None => Some(None),
            Some(sem) => tokio::select! {
                p = sem.clone().acquire_owned() => Some(p.ok()),
                _ = self.round.cancel.cancelled() => None,
            },
        }
    }

    /// Sends one turn and counts it; the reply, and what its prompt shares with those sent
    /// before it (None for warmups). A request the run stops while it is in flight gets a
    /// reply with outcome `cancelled`, so that it is recorded, not lost.
    async fn send(
        &self,
        messages: &[(String, String)],
        conv: &Conversation,
        t: usize,
    ) -> (client::Reply, Option<Shared>) {
        let spec = &*self.round.spec;
        let call = Call {
            base_url: &self.round.ctx.base_url,
            api: spec.api,
            model: &spec.model,
            messages,
            max_tokens: conv
                .max_tokens
                .get(t)
                .copied()
                .unwrap_or(spec.workload.output_tokens),
            enforce_output_length: spec.enforce_output_length,
            ttft_timeout: Duration::from_secs_f64(spec.load.ttft_timeout_s),
            idle_timeout: Duration::from_secs_f64(spec.load.idle_timeout_s),
        };
        let text = (!self.warmup).then(|| self.before_send(messages));
        let sent = Instant::now();
        let reply = tokio::select! {
            r = client::send(&self.round.ctx.client, &call) => r,
            _ = self.round.cancel.cancelled() => client::Reply::cancelled(sent),
        };
        if !self.warmup {
            self.after_send(&reply);
        }
        (reply, text.map(|t| self.shared(&t)))
    }

    /// What a prompt shares with the others of the round sent before it ended (see
    /// [`crate::prefix`]).
    fn shared(&self, text: &str) -> Shared {
        let bytes = self
            .round
            .counts
            .prefixes
            .lock()
            .map(|p| p.shared_bytes(text, 2))
            .unwrap_or(0);
        Shared {
            first_touch: bytes == 0,
            tokens: if bytes == 0 {
                0
            } else {
                self.round
                    .spec
                    .counter
                    .count(crate::prefix::head(text, bytes)) as u32
            },
        }
    }

    /// Counts a measured request in flight, keeps the round's first prompt for the next
    /// cold check, and registers the prompt as sent; its rendered text.
    fn before_send(&self, messages: &[(String, String)]) -> String {
        let spec = &*self.round.spec;
        self.round.counts.in_flight.fetch_add(1, Ordering::Relaxed);
        let text = crate::prefix::render(messages);
        if let Ok(mut p) = self.round.counts.prefixes.lock() {
            p.insert(&text);
        }
        if !self.round.counts.probe_taken.swap(true, Ordering::Relaxed) {
            if let Ok(mut p) = self.round.ctx.probe.lock() {
                *p = Some(Probe {
                    messages: messages.to_vec(),
                    api: spec.api,
                    model: spec.model.clone(),
                });
            }
        }
        text
    }

    fn after_send(&self, reply: &client::Reply) {
        self.round.counts.in_flight.fetch_sub(1, Ordering::Relaxed);
        let counter = if reply.outcome == Outcome::Ok {
            &self.round.counts.completed
        } else {
            &self.round.counts.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let gaps = reply.chunks.len().saturating_sub(1) as u64;
        let coalesced = reply
            .chunks
            .windows(2)
            .filter(|w| w[1].saturating_duration_since(w[0]) < health::COALESCED_GAP)
            .count() as u64;
        self.round.counts.gaps.fetch_add(gaps, Ordering::Relaxed);
        self.round
            .counts
            .coalesced_gaps
            .fetch_add(coalesced, Ordering::Relaxed);
    }

    /// The text that goes into the history after turn `turn`: the engine's reply in round
    /// 1; round 1's reply in later rounds, so that every round sends identical prompts.
    fn history_reply(&self, conv: u32, turn: u32, text: String) -> String {
        let key = (conv, turn);
        if self.round.spec.round == 1 {
            self.round
                .ctx
                .replies
                .put(&self.round.spec.scenario_id, key, text.clone());
            text
        } else {
            self.round
                .ctx
                .replies
                .get(&self.round.spec.scenario_id, key)
                .unwrap_or(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_puts_the_reply_on_the_rounds_clock() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let reply = client::Reply {
            sent: at(100),
            first_byte: Some(at(140)),
            first_token: Some(at(150)),
            chunks: vec![at(150), at(160), at(175)],
            end: at(180),
            prompt_tokens: Some(40),
            output_tokens: Some(3),
            cached_tokens: Some(16),
            finish_reason: "length".into(),
            outcome: Outcome::Ok,
            error: String::new(),
            http_status: Some(200),
            text: "a b c".into(),
            engine_ttft_us: Some(45_500),
            retried: true,
        };
        let ctx = RecordContext {
            scenario: "s",
            round: 2,
            agent: "a",
            request_id: 7,
            conversation_id: 3,
            turn: 1,
            warmup: false,
            shared: Some(Shared {
                first_touch: true,
                tokens: 0,
            }),
            t0,
            scheduled: at(90),
            queue_ms: 10.0,
            prompt_tokens_client: 38,
        };
        let r = build_record(&ctx, &reply);
        assert_eq!(
            (r.scenario.as_str(), r.round, r.agent.as_str()),
            ("s", 2, "a")
        );
        assert_eq!((r.request_id, r.conversation_id, r.turn), (7, 3, 1));
        assert_eq!(r.scheduled_ms, 90.0);
        assert_eq!(r.sent_ms, 100.0);
        assert_eq!(r.first_byte_ms, Some(140.0));
        assert_eq!(r.first_token_ms, Some(150.0));
        assert_eq!(
            r.chunk_offsets_ms,
            vec![50.0, 60.0, 75.0],
            "relative to sent"
        );
        assert_eq!(r.end_ms, 180.0);
        assert_eq!(r.output_chunks, 3);
        assert_eq!(r.engine_ttft_ms, Some(45.5));
        assert_eq!(r.ttft_ms(), Some(50.0));
        assert!(r.first_touch && r.retried);
        assert_eq!(r.shared_prefix_tokens, Some(0));
        assert_eq!(r.http_status, Some(200));
    }

    #[test]
    fn a_request_stopped_in_flight_is_a_cancelled_record() {
        // The request went out 5 ms after the round's zero, 50 ms ago.
        let t0 = Instant::now() - Duration::from_millis(55);
        let reply = client::Reply::cancelled(t0 + Duration::from_millis(5));
        let ctx = RecordContext {
            scenario: "s",
            round: 1,
            agent: "a",
            request_id: 0,
            conversation_id: 0,
            turn: 0,
            warmup: false,
            shared: None,
            t0,
            scheduled: t0,
            queue_ms: 0.0,
            prompt_tokens_client: 10,
        };
        let r = build_record(&ctx, &reply);
        assert_eq!(r.outcome, Outcome::Cancelled);
        assert_eq!(r.sent_ms, 5.0);
        assert!(r.end_ms >= r.sent_ms);
        assert!(r.first_token_ms.is_none());
    }

    #[test]
    fn opening_messages_are_the_system_prompt_then_the_prefix() {
        let conv = Conversation {
            id: 0,
            first_request_id: 0,
            system: Some("sys".into()),
            user_turns: vec!["u".into()],
            max_tokens: vec![1],
            think_time_ms: 0,
            prefix: vec![("assistant".into(), "earlier".into())],
            due_ms: None,
        };
        assert_eq!(
            opening_messages(&conv),
            vec![
                ("system".to_owned(), "sys".to_owned()),
                ("assistant".to_owned(), "earlier".to_owned())
            ]
        );
    }
}
