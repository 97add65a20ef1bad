//! Who judges a cold start: the isolation policy's outcome before a scenario
//! ([`IsolationStatus`]), the evidence round 1 leaves ([`ColdEvidence`]: cached tokens
//! against what each request could share with prompts sent before it, and the cold probe
//! after a clear), and the verdict from both ([`IsolationInfo::judge`], [`Verdict`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::{is_stale, ColdProbe};
use crate::record::{Outcome, RequestRecord};
use crate::results::RoundStats;

/// What the isolation step before a scenario did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationStatus {
    /// No isolation step ran (the first scenario of the plan).
    None,
    /// The policy does not clear (`wait`, `none`).
    Skipped,
    Cleared,
    Restarted,
    Failed,
}

impl IsolationStatus {
    /// How bad, to pick the worst of several agents'.
    pub fn severity(self) -> u8 {
        match self {
            IsolationStatus::Cleared | IsolationStatus::Restarted => 0,
            IsolationStatus::Skipped => 1,
            IsolationStatus::None => 2,
            IsolationStatus::Failed => 3,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            IsolationStatus::None => "none",
            IsolationStatus::Skipped => "skipped",
            IsolationStatus::Cleared => "cleared",
            IsolationStatus::Restarted => "restarted",
            IsolationStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for IsolationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Whether round 1 was really cold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The engine's reports show nothing reused that a cold cache could not give.
    Verified,
    /// The engine reports neither cached tokens nor prefix-cache counters.
    Unverified,
    /// Round 1 reused a cache that should have been empty (see the evidence).
    Failed,
    /// No isolation step ran before this scenario.
    None,
}

impl Verdict {
    /// How bad, to pick the worst of several agents': verified < none < unverified < failed.
    pub fn severity(self) -> u8 {
        match self {
            Verdict::Verified => 0,
            Verdict::None => 1,
            Verdict::Unverified => 2,
            Verdict::Failed => 3,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Unverified => "unverified",
            Verdict::Failed => "failed",
            Verdict::None => "none",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// What isolation before the scenario did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationInfo {
    /// What was asked.
    pub policy: crate::plan::IsolationPolicy,
    /// What the isolation step did.
    pub status: IsolationStatus,
    pub detail: String,
    pub wait_s: f64,
    /// Whether round 1 was really cold; judged once round 1 ran ([`IsolationInfo::judge`]).
    pub verdict: Verdict,
    /// What the verdict rests on, in words.
    pub evidence: Vec<String>,
    /// The cold check after the clear: the previous round's first prompt sent again.
    pub probe: Option<ColdProbe>,
    /// Round-1 requests with more cached tokens than they could share (see [`judge`]).
    ///
    /// [`judge`]: IsolationInfo::judge
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excess: Vec<ExcessCached>,
    /// Why the restart failed, when this isolation restarted the engine and it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_error: Option<crate::agent::RestartError>,
    /// With `clear_or_restart`: the clear's cold check that found a warm cache, so that the
    /// engine was restarted instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_probe: Option<ColdProbe>,
    /// With `clear_or_restart`: the scenario's first attempt, whose round 1 found a cache
    /// that was not cold; the engine was restarted and the scenario ran again (once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_after: Option<Box<DiscardedAttempt>>,
    /// A split scenario: each agent's isolation and verdict, by agent name (the policy ran
    /// on every agent at once; the scenario's verdict is the worst of theirs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_agent: BTreeMap<String, IsolationInfo>,
}

/// A scenario attempt set aside because its round 1 was not a cold start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscardedAttempt {
    /// Its isolation and verdict, with the evidence.
    pub isolation: IsolationInfo,
    /// Its round 1 (its records are the results file's `discarded_records`).
    pub round1: Option<RoundStats>,
}

impl IsolationInfo {
    /// What an isolation step did, not judged yet (verdict `none`), with no evidence.
    pub fn new(
        policy: crate::plan::IsolationPolicy,
        status: IsolationStatus,
        detail: String,
    ) -> IsolationInfo {
        IsolationInfo {
            policy,
            status,
            detail,
            wait_s: 0.0,
            verdict: Verdict::None,
            evidence: Vec::new(),
            probe: None,
            excess: Vec::new(),
            restart_error: None,
            fallback_probe: None,
            rerun_after: None,
            per_agent: BTreeMap::new(),
        }
    }

    /// The isolation of a scenario split across agents, from each agent's: the worst
    /// status, each agent's detail, the first restart error; judged per agent later.
    pub fn across(
        policy: crate::plan::IsolationPolicy,
        parts: Vec<(String, IsolationInfo)>,
        wait_s: f64,
    ) -> IsolationInfo {
        let status = parts
            .iter()
            .map(|(_, i)| i.status)
            .max_by_key(|s| s.severity())
            .unwrap_or(IsolationStatus::None);
        let detail = parts
            .iter()
            .map(|(a, i)| format!("{a}: {}", i.detail))
            .collect::<Vec<_>>()
            .join("; ");
        IsolationInfo {
            wait_s,
            restart_error: parts.iter().find_map(|(_, i)| i.restart_error),
            per_agent: parts.into_iter().collect(),
            ..IsolationInfo::new(policy, status, detail)
        }
    }

    /// Judges round 1 of a split scenario agent by agent (each on its own records); the
    /// scenario's verdict is the worst, its evidence every agent's, its excess all of them.
    fn judge_across(mut self, round1: &ColdEvidence) -> IsolationInfo {
        let parts = std::mem::take(&mut self.per_agent);
        let mut judged = BTreeMap::new();
        self.evidence.clear();
        self.excess.clear();
        self.verdict = Verdict::Verified;
        for (agent, info) in parts {
            let mine = round1.per_agent.get(&agent).cloned().unwrap_or_default();
            let info = info.judge_part(mine);
            if info.verdict.severity() > self.verdict.severity() {
                self.verdict = info.verdict;
            }
            self.evidence
                .extend(info.evidence.iter().map(|e| format!("{agent}: {e}")));
            self.excess.extend(info.excess.iter().cloned());
            judged.insert(agent, info);
        }
        self.per_agent = judged;
        self
    }

    /// Judges whether round 1 was cold: from the probe after the clear, and from every
    /// round-1 request's excess cached tokens (cached beyond what its prompt shared with
    /// prompts sent before it in the round: see [`excess_cached_tokens`]). Excess is
    /// evidence in every scenario, the first one and those without isolation included.
    pub fn judge(self, round1: &ColdEvidence) -> IsolationInfo {
        if !self.per_agent.is_empty() {
            return self.judge_across(round1);
        }
        self.judge_part(round1.total())
    }

    fn judge_part(mut self, round1: AgentEvidence) -> IsolationInfo {
        let mut failed = Vec::new();
        let mut fine = Vec::new();
        let mut reported = false;
        self.excess = round1.excess;
        let judged = round1.judged;
        if judged > 0 {
            reported = true;
            if self.excess.is_empty() {
                let cached = round1.cached_tokens;
                fine.push(format!(
                    "round 1: no request had more cached tokens than it shared with prompts sent before it ({judged} requests, {cached} cached tokens in all)"
                ));
            } else {
                failed.push(excess_line(&self.excess, judged));
            }
        }
        if let Some(p) = &self.probe {
            reported |= probe_lines(p, &mut failed, &mut fine);
        }
        if let Some(p) = &self.fallback_probe {
            fine.push(format!(
                "the clear's cold check found a warm cache ({} of {} tokens reused), so the engine was restarted instead",
                p.cached_tokens.unwrap_or(0),
                p.prompt_tokens
            ));
        }
        if let Some(a) = &self.rerun_after {
            fine.push(format!(
                "ran again after an engine restart: the first attempt's round 1 was not cold ({} requests with excess cached tokens)",
                a.isolation.excess.len()
            ));
        }
        let (verdict, mut evidence) = match self.status {
            IsolationStatus::None | IsolationStatus::Skipped if !self.excess.is_empty() => {
                (Verdict::Failed, failed)
            }
            IsolationStatus::None | IsolationStatus::Skipped => {
                (Verdict::None, [failed, fine].concat())
            }
            IsolationStatus::Failed => {
                let what = match self.restart_error {
                    Some(e) => format!("the restart failed ({e}): {}", self.detail),
                    None => format!("the clear failed: {}", self.detail),
                };
                (Verdict::Failed, [vec![what], failed].concat())
            }
            _ if !failed.is_empty() => (Verdict::Failed, failed),
            _ if !reported => (
                Verdict::Unverified,
                vec!["the engine reports neither cached tokens nor prefix-cache counters: start vLLM with --enable-prompt-tokens-details (SGLang: --enable-cache-report) and keep its /metrics reachable".to_owned()],
            ),
            _ => (Verdict::Verified, fine),
        };
        if evidence.is_empty() {
            evidence.push("no request of round 1 could show it".into());
        }
        self.verdict = verdict;
        self.evidence = evidence;
        self
    }
}

/// The probe's evidence, as lines; true when it reported anything.
fn probe_lines(p: &ColdProbe, failed: &mut Vec<String>, fine: &mut Vec<String>) -> bool {
    let mut reported = false;
    if let Some(c) = p.cached_tokens {
        reported = true;
        let line = format!(
            "probe after the clear: the engine reused {c} of {} tokens of the previous round's first prompt",
            p.prompt_tokens
        );
        if is_stale(f64::from(c), f64::from(p.prompt_tokens)) {
            failed.push(line);
        } else {
            fine.push(line);
        }
    }
    if let (Some(h), Some(q)) = (p.counter_hits, p.counter_queries) {
        reported = true;
        let line =
            format!("prefix-cache counters over the probe: {h:.0} hits of {q:.0} queried tokens");
        if is_stale(h, q) {
            failed.push(line);
        } else {
            fine.push(line);
        }
    }
    if !p.error.is_empty() {
        fine.push(p.error.clone());
    }
    reported
}

/// "round 1: 3 of 40 requests had ... : request 12 (2810 cached of 2871, at most 61
/// shareable, TTFT 75 ms), ..." (the five largest).
fn excess_line(excess: &[ExcessCached], judged: usize) -> String {
    let mut worst: Vec<&ExcessCached> = excess.iter().collect();
    worst.sort_by_key(|e| std::cmp::Reverse(e.cached_tokens.saturating_sub(e.shareable_tokens)));
    let shown: Vec<String> = worst
        .iter()
        .take(5)
        .map(|e| {
            format!(
                "request {} ({} of {} tokens cached, at most {} shareable, TTFT {})",
                e.request_id,
                e.cached_tokens,
                e.prompt_tokens,
                e.shareable_tokens,
                e.ttft_ms.map_or("n/a".to_owned(), |t| format!("{t:.0} ms"))
            )
        })
        .collect();
    let more = if excess.len() > 5 {
        format!(", and {} more", excess.len() - 5)
    } else {
        String::new()
    };
    format!(
        "round 1: {} of {judged} requests had cached tokens beyond what they shared with prompts sent before them, so the cache was not cold: {}{more}",
        excess.len(),
        shown.join(", ")
    )
}

/// Tokens per block assumed when rounding what a prompt could share (vLLM's default; an
/// engine that caches per token shares no more).
pub const SHARE_BLOCK_TOKENS: u32 = 16;

/// How many of a round-1 request's prompt tokens an engine that was cold when the round
/// began could have cached: the prefix it shared with prompts sent before it (the agent's
/// count, scaled to the engine's tokenizer by the ratio of the two prompt counts), plus
/// the chat template's tokens and the estimate's slack (one block and 5 % of the prompt),
/// rounded up to a block. `None` when the agent did not say what it shared.
pub fn shareable_tokens(r: &RequestRecord) -> Option<u32> {
    let shared = f64::from(r.shared_prefix_tokens?);
    let prompt = f64::from(r.input_tokens());
    let scale = if r.prompt_tokens_client > 0 {
        (prompt / f64::from(r.prompt_tokens_client)).clamp(0.25, 4.0)
    } else {
        1.0
    };
    let bound = shared * scale + f64::from(SHARE_BLOCK_TOKENS) + 0.05 * prompt;
    let block = f64::from(SHARE_BLOCK_TOKENS);
    Some(((bound / block).ceil() * block) as u32)
}

/// Cached tokens of a round-1 request beyond [`shareable_tokens`]: evidence of a cache
/// that was not cold. `None` when the engine or the agent did not report what it takes.
pub fn excess_cached_tokens(r: &RequestRecord) -> Option<u32> {
    Some(r.cached_tokens?.saturating_sub(shareable_tokens(r)?))
}

/// What round 1's records say about a cold start, gathered record by record, per agent:
/// the completed requests whose engine reported cached tokens, those of them judged (their
/// shareable prefix known), the cached tokens in all, and each request with excess.
#[derive(Debug, Clone, Default)]
pub struct ColdEvidence {
    per_agent: BTreeMap<String, AgentEvidence>,
}

#[derive(Debug, Clone, Default)]
struct AgentEvidence {
    judged: usize,
    cached_tokens: u64,
    excess: Vec<ExcessCached>,
}

impl ColdEvidence {
    pub fn of(round1: &[RequestRecord]) -> ColdEvidence {
        let mut e = ColdEvidence::default();
        round1.iter().for_each(|r| e.add(r));
        e
    }

    /// One record of round 1; warmups, failures and requests without a cached-token count
    /// say nothing.
    pub fn add(&mut self, r: &RequestRecord) {
        let Some(cached) = r.cached_tokens else {
            return;
        };
        if r.warmup || r.outcome != Outcome::Ok {
            return;
        }
        if !self.per_agent.contains_key(&r.agent) {
            self.per_agent
                .insert(r.agent.clone(), AgentEvidence::default());
        }
        let Some(e) = self.per_agent.get_mut(&r.agent) else {
            return;
        };
        e.cached_tokens += u64::from(cached);
        if r.shared_prefix_tokens.is_some() {
            e.judged += 1;
        }
        if excess_cached_tokens(r).is_some_and(|x| x > 0) {
            e.excess.push(ExcessCached {
                request_id: r.request_id,
                cached_tokens: cached,
                shareable_tokens: shareable_tokens(r).unwrap_or(0),
                prompt_tokens: r.input_tokens(),
                ttft_ms: r.ttft_ms(),
            });
        }
    }

    /// All agents' evidence together.
    fn total(&self) -> AgentEvidence {
        let mut all = AgentEvidence::default();
        for e in self.per_agent.values() {
            all.judged += e.judged;
            all.cached_tokens += e.cached_tokens;
            all.excess.extend(e.excess.iter().cloned());
        }
        all
    }
}

/// A round-1 request that found more of its prompt cached than it could have shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExcessCached {
    pub request_id: u32,
    pub cached_tokens: u32,
    /// At most this much could have been cached on a cold engine.
    pub shareable_tokens: u32,
    pub prompt_tokens: u32,
    pub ttft_ms: Option<f64>,
}
