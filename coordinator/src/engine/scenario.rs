//! One scenario, round by round, through its agent: the rounds' requests, their statistics
//! (complete, in one place), the isolation verdict after round 1, the comparison of the last
//! round with round 1, the result files, and how the scenario ended. Everything it does is
//! told to an [`Observer`]; a failing round or file never loses what was measured before.
//!
//! Records are never held: each one, as it arrives, goes into the round's statistics
//! ([`RoundAccumulator`], and each agent's in a split round), round 1's evidence of a cold
//! start, and the scenario's record file on disk ([`RecordSpool`]).

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use kvbench_common::agent::{RoundEvent, RoundRequest, RoundRequests};
use kvbench_common::dataset::Dataset;
use kvbench_common::isolation::{ColdEvidence, DiscardedAttempt, IsolationInfo, OuterTier};
use kvbench_common::load::Arrivals;
use kvbench_common::plan::{IsolationPolicy, Placement, Plan, Scenario};
use kvbench_common::prefix_cache::{block_tokens, DEFAULT_BLOCK_TOKENS};
use kvbench_common::results::{
    Comparison, EngineFailure, EngineRestart, RoundStats, ScenarioAgent, ScenarioEngine,
    ScenarioInfo, ScenarioStats, ScenarioStatus,
};
use kvbench_common::stats::accumulate::RoundAccumulator;
use kvbench_common::util::rfc3339_utc;
use tokio_util::sync::CancellationToken;

use super::events::{Observer, RunEvent};
use super::outcome::ScenarioOutcome;
use crate::agents::{AgentClient, RoundEnd};
use crate::output::scenario_files::{self as results, RecordSpool, ScenarioFiles, SpoolError};

/// What a scenario runs with.
#[derive(Debug, Clone)]
pub struct Session<'a> {
    pub plan: &'a Plan,
    pub scenario: &'a Scenario,
    /// The agent it runs on; several: split across them at once.
    pub agents: &'a [&'a AgentClient],
    /// Unique per scenario run (the agent keys round 1's replies by it).
    pub scenario_id: &'a str,
    pub dataset: Option<&'a Dataset>,
    pub tokenizer: Option<&'a [u8]>,
    pub cancel: &'a CancellationToken,
    /// Where its files go (named when it started).
    pub files: &'a ScenarioFiles,
    /// What happened to an earlier attempt the run was resumed after.
    pub interruption: Option<String>,
    /// Set (and `cancel` fired) when the scenario's records cannot be written.
    pub output_failure: &'a std::sync::OnceLock<SpoolError>,
}

/// The scenario's records (on disk) and rounds so far.
#[derive(Debug)]
struct Progress {
    spool: RecordSpool,
    /// Round 1's evidence of a cold start (of the attempt that counts).
    cold: ColdEvidence,
    rounds: Vec<RoundStats>,
    /// Rounds that ran to their end (a cancelled or broken round is never compared).
    complete: Vec<u32>,
    status: Option<ScenarioStatus>,
    error: Option<String>,
    telemetry_written: bool,
    /// Parts whose agent was lost, for the run to fetch what they measured later.
    lost: Vec<super::outcome::LostPart>,
    /// Engines found down during its rounds.
    engine: Vec<EngineFailure>,
    /// The scenario already ran again after an engine's restart (it does once).
    engine_rerun: bool,
}

impl Progress {
    fn new(files: &ScenarioFiles) -> Progress {
        Progress {
            spool: RecordSpool::new(files.records.clone()),
            cold: ColdEvidence::default(),
            rounds: Vec::new(),
            complete: Vec::new(),
            status: None,
            error: None,
            telemetry_written: false,
            lost: Vec::new(),
            engine: Vec::new(),
            engine_rerun: false,
        }
    }
}

impl Session<'_> {
    /// Runs every round, then writes the result files.
    pub async fn run(
        &self,
        mut isolation: IsolationInfo,
        obs: &mut dyn Observer,
    ) -> ScenarioOutcome {
        let started = Instant::now();
        let started_at = rfc3339_utc(SystemTime::now());
        let files = self.files;
        let mut p = Progress::new(files);
        let mut round = 0;
        if let Some(e) = isolation.restart_error.filter(|e| e.engine_may_be_down()) {
            // Nothing is sent to an engine that did not come back; the plan goes on.
            p.status = Some(ScenarioStatus::Failed);
            p.error = Some(format!(
                "not run: the engine did not come back after the restart ({e}: {})",
                isolation.detail
            ));
            round = self.scenario.rounds;
        }
        while round < self.scenario.rounds {
            round += 1;
            let (st, error, partial) = self.round(round, files, &mut p, obs).await;
            if let Some(i) = self.restarted_engine(round, &p) {
                let agent = p.engine[i].agent.clone();
                // What the attempt measured straddles a restart: it is set aside, whole,
                // and the scenario runs again from its isolation step (once).
                obs.on(&RunEvent::EngineRerun {
                    scenario: self.scenario,
                    round,
                    agent: &agent,
                });
                let mut set_aside = std::mem::take(&mut p.rounds);
                set_aside.extend(st);
                p.engine[i].set_aside = set_aside;
                p.engine_rerun = true;
                p.spool.set_aside();
                p.complete.clear();
                p.cold = ColdEvidence::default();
                isolation =
                    super::isolation::isolate(self.plan, self.agents, self.cancel, obs).await;
                round = 0;
                continue;
            }
            if round == 1 {
                if let Some(st) = &st {
                    self.engine_evidence(&mut p.cold, st);
                }
                isolation = isolation.judge(&p.cold);
                obs.on(&RunEvent::Verdict(&isolation));
                if error.is_none() && self.should_rerun(&isolation) {
                    isolation = self.rerun(isolation, st, &mut p, obs).await;
                    round = 0;
                    continue;
                }
            }
            if let Some(st) = st {
                p.rounds.push(st);
            }
            if let Some(e) = error {
                p.status = Some(if self.cancel.is_cancelled() {
                    ScenarioStatus::Cancelled
                } else if partial {
                    ScenarioStatus::Partial
                } else {
                    ScenarioStatus::Failed
                });
                p.error = Some(format!("round {round}: {e}"));
                break;
            }
        }
        let compared: Vec<RoundStats> = p
            .rounds
            .iter()
            .filter(|r| p.complete.contains(&r.round) && r.completed > 0)
            .cloned()
            .collect();
        let comparison = Comparison::on_common_requests(
            &compared,
            || p.spool.read_kept(),
            &self.scenario.config.stats,
        );
        if let Some(c) = &comparison {
            obs.on(&RunEvent::Comparison(c));
        }
        let status = p
            .status
            .unwrap_or_else(|| self.judge_errors(&p.rounds, &mut p.error));
        kvbench_common::results::explain_efficiency(&mut p.rounds);
        let stats = ScenarioStats {
            kvbench_version: env!("CARGO_PKG_VERSION").into(),
            scenario: scenario_info(self.scenario),
            status,
            error: p.error.clone(),
            started_at,
            finished_at: rfc3339_utc(SystemTime::now()),
            engine: engine_info(self.scenario, self.agents),
            agent: if self.agents.len() == 1 {
                agent_info(self.agents[0])
            } else {
                split_info(self.agents)
            },
            agents: if self.agents.len() > 1 {
                self.agents.iter().map(|a| agent_info(a)).collect()
            } else {
                Vec::new()
            },
            isolation,
            rounds: std::mem::take(&mut p.rounds),
            comparison,
            interruption: self.interruption.clone(),
            engine_failures: std::mem::take(&mut p.engine),
        };
        let outcome = match self.output_failure.get() {
            // The attempt is resumed, not ended: no result files (they could not be
            // written whole anyway); its records file stays as the failure left it.
            Some(_) => ScenarioOutcome {
                name: stats.scenario.name.clone(),
                stats,
                stats_path: None,
                results_path: None,
                telemetry_path: p.telemetry_written.then(|| files.telemetry.clone()),
                records: p.spool.kept() as usize,
                lost: std::mem::take(&mut p.lost),
            },
            None => finish(stats, files, &mut p),
        };
        obs.on(&RunEvent::ScenarioFinished {
            outcome: &outcome,
            took_s: started.elapsed().as_secs_f64(),
        });
        outcome
    }

    /// Hands round 1's evidence what each agent's engine said of the round: its
    /// prefix-cache hits by its counters and its KV block size (else its kind's).
    fn engine_evidence(&self, cold: &mut ColdEvidence, st: &RoundStats) {
        for agent in cold.agents() {
            let metrics = if st.per_agent.is_empty() {
                st.engine_metrics.as_ref()
            } else {
                st.per_agent
                    .get(&agent)
                    .and_then(|s| s.engine_metrics.as_ref())
            };
            let kind = self
                .agents
                .iter()
                .find(|a| a.name() == agent)
                .map_or("", |a| a.info().engine_kind.as_str());
            let tiers = if st.per_agent.is_empty() {
                st.cache_tiers.as_ref()
            } else {
                st.per_agent
                    .get(&agent)
                    .and_then(|s| s.cache_tiers.as_ref())
            };
            let (hits, tier) = match tiers {
                Some(t) if t.external_tokens.is_none() && t.requests.is_some() => {
                    (t.beyond_device(), OuterTier::Hicache)
                }
                t => (t.and_then(|t| t.external_tokens), OuterTier::Connector),
            };
            cold.external(&agent, hits, tier);
            let reported = metrics
                .and_then(|m| m.block_size)
                .filter(|b| *b >= 1.0 && *b <= f64::from(u32::MAX))
                .map(|b| b as u32);
            cold.engine(
                &agent,
                metrics.and_then(|m| m.prefix_cache_hits),
                block_tokens(reported, kind),
            );
        }
    }

    /// The engine failure of `round` (its index in `p.engine`) whose restart makes the
    /// scenario run again: the first such restart, the run going on.
    fn restarted_engine(&self, round: u32, p: &Progress) -> Option<usize> {
        if p.engine_rerun || self.cancel.is_cancelled() {
            return None;
        }
        p.engine
            .iter()
            .position(|f| f.round == round && f.restart.as_ref().is_some_and(|r| r.succeeded))
    }

    /// `clear_or_restart`, round 1 found a cache that was not cold, the run goes on and
    /// this is the first attempt.
    fn should_rerun(&self, isolation: &IsolationInfo) -> bool {
        self.plan.isolation == IsolationPolicy::ClearOrRestart
            && isolation.found_warm()
            && isolation.rerun_after.is_none()
            && !self.cancel.is_cancelled()
    }

    /// Sets the attempt aside (its round 1 and records are kept), restarts the engine and
    /// returns the new attempt's isolation.
    async fn rerun(
        &self,
        failed: IsolationInfo,
        round1: Option<RoundStats>,
        p: &mut Progress,
        obs: &mut dyn Observer,
    ) -> IsolationInfo {
        obs.on(&RunEvent::Rerunning {
            scenario: self.scenario,
            failed: &failed,
        });
        let mut fresh = super::isolation::restart_for_rerun(self.plan, self.agents, obs).await;
        fresh.rerun_after = Some(Box::new(DiscardedAttempt {
            isolation: failed,
            round1,
        }));
        p.spool.set_aside();
        p.complete.clear();
        fresh
    }

    /// `degraded` when some round failed more requests than the plan allows.
    fn judge_errors(&self, rounds: &[RoundStats], error: &mut Option<String>) -> ScenarioStatus {
        let limit = self.plan.max_error_rate;
        let worst = rounds
            .iter()
            .filter(|r| r.completed + r.failed > 0)
            .map(|r| {
                (
                    r.round,
                    f64::from(r.failed) / f64::from(r.completed + r.failed),
                )
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match worst {
            Some((round, rate)) if rate > limit => {
                *error = Some(format!(
                    "round {round}: {:.1} % of requests failed, more than max_error_rate {:.1} %",
                    rate * 100.0,
                    limit * 100.0
                ));
                ScenarioStatus::Degraded
            }
            _ => ScenarioStatus::Completed,
        }
    }

    /// Runs one round; its statistics (none when nothing ran), the error that ends the
    /// scenario, if any, and whether it is partial (a split round some of whose agents
    /// finished while another failed). Records and telemetry are kept whatever happened.
    async fn round(
        &self,
        round: u32,
        files: &ScenarioFiles,
        p: &mut Progress,
        obs: &mut dyn Observer,
    ) -> (Option<RoundStats>, Option<String>, bool) {
        let s = self.scenario;
        let req = self.request(round);
        let mut sink = RoundSink::new(self, &req, &mut p.spool);
        let kept = std::cell::Cell::new(true);
        let mut tee = Tee {
            sink: &mut sink,
            obs: &mut *obs,
            kept: &kept,
            output_failure: self.output_failure,
            cancel: self.cancel,
        };
        let mut partial = false;
        let mut lost = Vec::new();
        let (run, per_agent) = if let [agent] = self.agents {
            let run = agent
                .run_round(&req, self.cancel, |e| {
                    tee.on(&RunEvent::Round {
                        scenario: s,
                        round,
                        event: e,
                    });
                    kept.get()
                })
                .await;
            lost.push(run.end.clone());
            (run, BTreeMap::new())
        } else {
            let reqs = super::split::requests(&req, self.agents);
            let parts =
                super::split::run_round(self.agents, &reqs, self.cancel, s, round, &mut tee, &kept)
                    .await;
            let per_agent = parts
                .iter()
                .map(|part| (part.agent.clone(), tee.sink.part_stats(part)))
                .collect();
            lost.extend(parts.iter().map(|p| p.run.end.clone()));
            partial = parts
                .iter()
                .any(|p| matches!(p.run.end, RoundEnd::Finished(_)))
                && parts
                    .iter()
                    .any(|p| matches!(p.run.end, RoundEnd::Failed(_)));
            (super::split::merge(parts), per_agent)
        };
        obs.on(&RunEvent::RoundEnded { scenario: s, round });
        for end in lost {
            if let RoundEnd::Failed(crate::agents::RoundFailure::Lost { agent, held, .. }) = end {
                p.lost.push(super::outcome::LostPart {
                    agent,
                    scenario_id: self.scenario_id.to_owned(),
                    scenario: s.name.clone(),
                    round,
                    held,
                    late_records: files.late_records(),
                    until: std::time::Instant::now() + req.reconnect_window,
                });
            }
        }
        for t in &run.engine {
            obs.on(&RunEvent::EngineFailed {
                scenario: s,
                round,
                trouble: t,
            });
            p.engine.push(engine_failure(round, run.anchor_us, t));
        }
        let (finished, mut error) = match &run.end {
            RoundEnd::Finished(f) => (Some(f.clone()), None),
            RoundEnd::Cancelled => (
                None,
                Some(match self.output_failure.get() {
                    Some(e) => format!("the run stopped: {e}"),
                    None => "cancelled by the user".to_owned(),
                }),
            ),
            RoundEnd::Failed(e) => (None, Some(e.to_string())),
        };
        let acc = &sink.merged;
        let duration_s = finished
            .as_ref()
            .map_or_else(|| acc.span_s(), |f| f.duration_ms / 1000.0);
        let mut st = acc.finish(
            duration_s,
            &run.telemetry,
            finished.as_ref().and_then(|f| f.health.as_ref()),
        );
        st.per_agent = per_agent;
        st.started_at_us = run.anchor_us;
        st.resumed = run.resumed.clone();
        obs.on(&RunEvent::RoundStats {
            scenario: s,
            stats: &st,
        });
        if error.is_none() && st.completed == 0 && st.failed > 0 {
            error = Some(all_failed(&st, acc.first_error()));
        }
        if finished.is_some() {
            p.complete.push(round);
        }
        let ran = acc.records() > 0 || finished.is_some();
        if let Some(cold) = sink.cold {
            p.cold = cold;
        }
        // Each round's samples are on disk as soon as the round ends.
        if !run.telemetry.is_empty() {
            match results::append_jsonl(&files.telemetry, &run.telemetry) {
                Ok(()) => p.telemetry_written = true,
                Err(e) => obs.on(&RunEvent::Problem(format!(
                    "cannot write telemetry samples: {e:#}"
                ))),
            }
        }
        if let Some(e) = &mut error {
            for t in &run.engine {
                match &t.restarted {
                    Some(r) if !r.succeeded() => {
                        e.push_str(&format!("; {}'s engine restart failed: {}", t.agent, r.detail))
                    }
                    Some(_) if p.engine_rerun => e.push_str(&format!(
                        "; {}'s engine went down again after its restart (the scenario runs again once)",
                        t.agent
                    )),
                    _ => {}
                }
            }
        }
        if partial {
            if let Some(e) = &mut error {
                e.push_str("; the other agents' records are kept");
            }
        }
        (ran.then_some(st), error, partial)
    }

    fn request(&self, round: u32) -> RoundRequest {
        let s = self.scenario;
        let c = &s.config;
        RoundRequest {
            scenario_id: self.scenario_id.to_owned(),
            scenario_name: s.name.clone(),
            round,
            workload: c.workload.clone(),
            load: s.load_spec(round),
            model: c.model.clone(),
            api: c.api,
            enforce_output_length: c.enforce_output_length,
            requests: match self.dataset {
                Some(Dataset::Conversations(cs)) => RoundRequests::Conversations(cs.clone()),
                Some(Dataset::Trace(t)) => RoundRequests::Trace {
                    entries: t.clone(),
                    use_timestamps: c.dataset.as_ref().is_some_and(|d| d.use_timestamps),
                    speedup: c.dataset.as_ref().map_or(1.0, |d| d.speedup),
                },
                None => RoundRequests::Generated,
            },
            tokenizer_json: self.tokenizer.map(<[u8]>::to_vec),
            engine_tokenizer: c.engine_tokenizer,
            share: None,
            start_at_us: None,
            reconnect_window: self.plan.reconnect_window,
        }
    }
}

/// Tokens per KV block of an agent's engine kind, for an engine that does not report its
/// own (llama.cpp and SGLang reuse any prefix, token by token).
fn kind_block(a: &AgentClient) -> u32 {
    block_tokens(None, &a.info().engine_kind)
}

/// Where a round's records go as they arrive: its statistics, each agent's part of them
/// (a split round), round 1's evidence of a cold start, and the scenario's record file.
struct RoundSink<'p> {
    merged: RoundAccumulator,
    per_agent: BTreeMap<String, RoundAccumulator>,
    cold: Option<ColdEvidence>,
    spool: &'p mut RecordSpool,
}

impl<'p> RoundSink<'p> {
    fn new(session: &Session<'_>, req: &RoundRequest, spool: &'p mut RecordSpool) -> Self {
        let opts = &session.scenario.config.stats;
        // A closed loop's start-up burst is reported apart.
        let wave = match req.load.arrivals {
            Arrivals::Closed { concurrency } => Some(concurrency),
            _ => None,
        };
        let per_agent = if session.agents.len() > 1 {
            session
                .agents
                .iter()
                .map(|a| {
                    let acc = RoundAccumulator::new(req.round, opts, None)
                        .with_block_fallback(kind_block(a));
                    (a.name().to_owned(), acc)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        RoundSink {
            merged: RoundAccumulator::new(req.round, opts, wave).with_block_fallback(
                session
                    .agents
                    .first()
                    .map_or(DEFAULT_BLOCK_TOKENS, |a| kind_block(a)),
            ),
            per_agent,
            cold: (req.round == 1).then(ColdEvidence::default),
            spool,
        }
    }

    /// Takes one record; a record that cannot be written is the error (said once).
    fn add(
        &mut self,
        r: &kvbench_common::record::RequestRecord,
    ) -> Result<(), crate::output::scenario_files::SpoolError> {
        self.merged.add(r);
        if let Some(acc) = self.per_agent.get_mut(&r.agent) {
            acc.add(r);
        }
        if let Some(c) = &mut self.cold {
            c.add(r);
        }
        self.spool.append(r)
    }

    /// One agent's part of a split round, on its own.
    fn part_stats(&self, part: &super::split::Part) -> RoundStats {
        let Some(acc) = self.per_agent.get(&part.agent) else {
            return self.merged.finish_records(0.0);
        };
        let health = match &part.run.end {
            RoundEnd::Finished(f) => f.health.as_ref(),
            _ => None,
        };
        let duration_s = part.duration_s.unwrap_or_else(|| acc.span_s());
        let mut st = acc.finish(duration_s, &part.run.telemetry, health);
        st.started_at_us = part.run.anchor_us;
        st
    }
}

/// Feeds each record to the sink on its way to the observer.
struct Tee<'a, 'p> {
    sink: &'a mut RoundSink<'p>,
    obs: &'a mut dyn Observer,
    /// False once a record could not be written (nothing after it is acknowledged).
    kept: &'a std::cell::Cell<bool>,
    /// The run's: set, and the run stopped, when the records cannot be written.
    output_failure: &'a std::sync::OnceLock<SpoolError>,
    cancel: &'a CancellationToken,
}

impl Observer for Tee<'_, '_> {
    fn on(&mut self, event: &RunEvent<'_>) {
        if let RunEvent::Round {
            event: RoundEvent::Record(r),
            ..
        } = event
        {
            if let Err(e) = self.sink.add(r) {
                // A disk that is full or gone: every record from here on would be lost, so
                // the run stops (the agents keep what was not acknowledged, for a resume).
                self.kept.set(false);
                self.obs.on(&RunEvent::OutputFailed(&e));
                let _ = self.output_failure.set(e);
                self.cancel.cancel();
            }
        }
        self.obs.on(event);
    }
}

/// Writes the files; a scenario whose files cannot be written has failed (what was
/// measured is still in the outcome, for the summary).
fn finish(mut stats: ScenarioStats, files: &ScenarioFiles, p: &mut Progress) -> ScenarioOutcome {
    let written = results::write_scenario(files, &stats, &mut p.spool);
    let write_error = written.as_ref().err().map(|e| format!("{e:#}"));
    if let Some(e) = &write_error {
        stats.status = ScenarioStatus::Failed;
        let before = stats.error.take();
        stats.error = Some(match before {
            Some(b) => format!("{b}; cannot write result files: {e}"),
            None => format!("cannot write result files: {e}"),
        });
    }
    let ok = write_error.is_none();
    ScenarioOutcome {
        name: stats.scenario.name.clone(),
        stats,
        stats_path: ok.then(|| files.stats.clone()),
        results_path: ok.then(|| files.results.clone()),
        telemetry_path: p.telemetry_written.then(|| files.telemetry.clone()),
        records: p.spool.kept() as usize,
        lost: std::mem::take(&mut p.lost),
    }
}

/// An engine found down, as the stats file keeps it.
fn engine_failure(
    round: u32,
    anchor_us: Option<i64>,
    t: &crate::agents::EngineTrouble,
) -> EngineFailure {
    let at = anchor_us.filter(|a| *a > 0).map(|a| {
        let us = a as u64 + (t.down.at_ms.max(0.0) * 1000.0) as u64;
        rfc3339_utc(std::time::UNIX_EPOCH + std::time::Duration::from_micros(us))
    });
    EngineFailure {
        agent: t.agent.clone(),
        round,
        at,
        at_ms: t.down.at_ms,
        detail: t.down.detail.clone(),
        restart: t.restarted.as_ref().map(|r| EngineRestart {
            succeeded: r.succeeded(),
            error: r.error.map(|e| e.label().to_owned()),
            detail: r.detail.clone(),
            took_ms: r.took_ms,
        }),
        set_aside: Vec::new(),
    }
}

fn all_failed(st: &RoundStats, first_error: Option<&str>) -> String {
    format!(
        "all {} requests failed ({}); first error: {}",
        st.failed,
        st.failure_counts(),
        first_error.unwrap_or("")
    )
}

fn scenario_info(s: &Scenario) -> ScenarioInfo {
    ScenarioInfo {
        name: s.name.clone(),
        kind: s.kind.label().into(),
        config_file: s.config_file.clone(),
        rounds: s.rounds,
        concurrency: s.concurrency,
        tokenizer: s.config.tokenizer_label(),
        split_across: if s.is_split() {
            s.agents.clone()
        } else {
            Vec::new()
        },
        repeat: s.repeat.clone(),
        sweep: s.sweep.clone(),
    }
}

fn engine_info(s: &Scenario, agents: &[&AgentClient]) -> ScenarioEngine {
    let urls: Vec<&str> = agents
        .iter()
        .map(|a| a.info().engine_display.as_str())
        .collect();
    ScenarioEngine {
        endpoint: s.config.endpoint.to_string(),
        engine_url: urls.join(", "),
        model: s.config.model.clone(),
        api: s.config.api.label().to_owned(),
    }
}

/// A split scenario's `agent`: its agents' names, hosts and versions (each in full is in
/// `agents`), and how it ran.
fn split_info(agents: &[&AgentClient]) -> ScenarioAgent {
    let joined = |f: fn(&AgentClient) -> &str| {
        let mut v: Vec<&str> = agents.iter().map(|a| f(a)).collect();
        v.dedup();
        v.join(",")
    };
    ScenarioAgent {
        name: joined(|a| a.name()),
        hostname: joined(|a| &a.info().hostname),
        version: joined(|a| &a.info().agent_version),
        address: joined(|a| a.url()),
        placement: Some(Placement::Split),
        ..ScenarioAgent::default()
    }
}

fn agent_info(agent: &AgentClient) -> ScenarioAgent {
    let i = agent.info();
    // Remote agents: the clock as measured before the run.
    let clock = agent.measured_clock();
    ScenarioAgent {
        name: i.agent_name.clone(),
        hostname: i.hostname.clone(),
        version: i.agent_version.clone(),
        address: agent.url().to_owned(),
        clock_offset_ms: clock.map(|c| c.offset_ms),
        rtt_ms: clock.map(|c| c.rtt_ms),
        clock_warning: clock
            .filter(|c| c.offset_ms.abs() > crate::agents::CLOCK_OFFSET_WARN_MS)
            .map(|c| {
                format!(
                    "the agent's clock is {:+.1} ms off the coordinator's (more than {} ms)",
                    c.offset_ms,
                    crate::agents::CLOCK_OFFSET_WARN_MS
                )
            }),
        placement: None,
    }
}
