//! Who judges a cold start: the isolation policy's outcome before a scenario
//! ([`IsolationStatus`]), the evidence round 1 leaves ([`ColdEvidence`]: cached tokens
//! against what each request could share with prompts sent before it, and the cold probe
//! after a clear), and the verdict from both ([`IsolationInfo::judge`], [`Verdict`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::{is_stale, ColdProbe};
use crate::prefix_cache::{PromptShare, DEFAULT_BLOCK_TOKENS};
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
    /// Round-1 prefix groups whose every request found their common start cached: none of
    /// them computed it (see [`ColdEvidence`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warm_groups: Vec<WarmGroup>,
    /// Round 1's cached tokens against the most a cold cache could have given its requests
    /// in the order they were sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round1_bound: Option<ColdBound>,
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
            warm_groups: Vec::new(),
            round1_bound: None,
            restart_error: None,
            fallback_probe: None,
            rerun_after: None,
            per_agent: BTreeMap::new(),
        }
    }

    /// Round 1's own records (or the engine's counters over it) show a cache that was not
    /// cold: a request with excess cached tokens, a prefix group none of whose requests
    /// computed its start, or more cached tokens than a cold cache could have given.
    pub fn found_warm(&self) -> bool {
        !self.excess.is_empty()
            || !self.warm_groups.is_empty()
            || self.round1_bound.as_ref().is_some_and(|b| b.exceeded)
            || self.per_agent.values().any(IsolationInfo::found_warm)
    }

    /// What showed round 1 warm, in a few words (empty when nothing did).
    pub fn warm_summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.excess.is_empty() {
            parts.push(format!(
                "{} requests found more cached than they could share",
                self.excess.len()
            ));
        }
        if !self.warm_groups.is_empty() {
            parts.push(format!(
                "{} prefix groups none of whose requests computed their common start",
                self.warm_groups.len()
            ));
        }
        if let Some(b) = self.round1_bound.as_ref().filter(|b| b.exceeded) {
            parts.push(format!(
                "{} tokens cached where a cold cache could give at most {}",
                thousands(b.cached_tokens),
                thousands(b.cold_limit_tokens)
            ));
        }
        for (agent, info) in &self.per_agent {
            let s = info.warm_summary();
            if !s.is_empty() {
                parts.push(format!("{agent}: {s}"));
            }
        }
        parts.join("; ")
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
        self.warm_groups.clear();
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
            self.warm_groups.extend(info.warm_groups.iter().cloned());
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
        self.excess = round1.excess.clone();
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
        self.warm_groups = round1.warm_groups();
        for g in &self.warm_groups {
            failed.push(g.line());
        }
        self.round1_bound = round1.bound();
        if let Some(b) = &self.round1_bound {
            reported = true;
            if b.exceeded {
                failed.push(b.line());
            } else {
                fine.push(b.line());
            }
        }
        if let Some(p) = &self.probe {
            reported |= probe_lines(p, &mut failed, &mut fine);
        }
        if let Some(x) = round1
            .external_hits
            .filter(|x| *x > 0.0 && !failed.is_empty())
        {
            failed.push(round1.external_tier.warm_line(&thousands(x.round() as u64)));
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
                "ran again after an engine restart: the first attempt's round 1 was not cold ({})",
                a.isolation.warm_summary()
            ));
        }
        let (verdict, mut evidence) = match self.status {
            IsolationStatus::None | IsolationStatus::Skipped if self.found_warm() => {
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
            _ if !reported => (Verdict::Unverified, vec![unreported(&round1)]),
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
/// shareable prefix known), the cached tokens in all, each request with excess, and what
/// every request shared in the order sent (for the prefix groups and the round's bound);
/// then, once the round ended, the engine's counters and block size
/// ([`ColdEvidence::engine`]).
#[derive(Debug, Clone, Default)]
pub struct ColdEvidence {
    per_agent: BTreeMap<String, AgentEvidence>,
}

#[derive(Debug, Clone, Default)]
struct AgentEvidence {
    judged: usize,
    cached_tokens: u64,
    excess: Vec<ExcessCached>,
    /// Every measured request sent, with what it shared in the order sent.
    requests: Vec<SentRequest>,
    /// Completed requests without a cached-token count.
    requests_without_cached: usize,
    /// Measured requests without an in-order share (an agent that does not say).
    requests_without_share: usize,
    /// The engine's prefix-cache hits over the round (its counters), when it reports them.
    counter_hits: Option<f64>,
    /// Of the engine's hits over the round, those its tiers behind its own prefix cache
    /// gave (vLLM's `external_prefix_cache_hits`, SGLang's host and storage tiers), when it
    /// reports them.
    external_hits: Option<f64>,
    external_tier: OuterTier,
    block: u32,
}

/// The tiers behind an engine's own prefix cache, as the cold-start verdict names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OuterTier {
    /// vLLM's KV connector (`external_prefix_cache_hits`: CPU offload, LMCache, Mooncake),
    /// counted apart from its prefix cache's hits.
    #[default]
    Connector,
    /// SGLang's HiCache host and storage tiers, as each request reported them
    /// (`cached_tokens_details`).
    Hicache,
}

impl OuterTier {
    /// The evidence line for `tokens` cached tokens it gave a round 1 that was not cold.
    fn warm_line(self, tokens: &str) -> String {
        match self {
            OuterTier::Connector => format!(
                "round 1: {tokens} of the cached tokens came from the engine's KV connector tier (vllm:external_prefix_cache_hits: CPU offload, LMCache or Mooncake), which the isolation left warm: clear that tier too (vLLM: /reset_prefix_cache?reset_external=true; LMCache: its controller's /clear; Mooncake: the master's remove_all) or restart the engine and the store"
            ),
            OuterTier::Hicache => format!(
                "round 1: {tokens} of the cached tokens came from SGLang's HiCache host or storage tier (the requests' cached_tokens_details), which the isolation left warm: clear it too (SGLang: /flush_cache; its storage backend's own clear) or restart the engine"
            ),
        }
    }
}

/// One measured round-1 request, for the prefix groups and the round's bound.
#[derive(Debug, Clone, Copy)]
struct SentRequest {
    group: Option<u32>,
    share: PromptShare,
    /// The engine's cached tokens when it completed and reported them.
    cached: Option<u32>,
    ok: bool,
}

impl ColdEvidence {
    pub fn of(round1: &[RequestRecord]) -> ColdEvidence {
        let mut e = ColdEvidence::default();
        round1.iter().for_each(|r| e.add(r));
        e
    }

    /// One record of round 1; warmups say nothing, failures only that they were sent.
    pub fn add(&mut self, r: &RequestRecord) {
        if r.warmup {
            return;
        }
        let e = self
            .per_agent
            .entry(r.agent.clone())
            .or_insert_with(|| AgentEvidence {
                block: DEFAULT_BLOCK_TOKENS,
                ..AgentEvidence::default()
            });
        let ok = r.outcome == Outcome::Ok;
        match PromptShare::of(r) {
            Some(share) => e.requests.push(SentRequest {
                group: r.prefix_group,
                share,
                cached: r.cached_tokens.filter(|_| ok),
                ok,
            }),
            None => e.requests_without_share += 1,
        }
        if !ok {
            return;
        }
        let Some(cached) = r.cached_tokens else {
            e.requests_without_cached += 1;
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

    /// What agent `agent`'s engine said of round 1 once it ended: its prefix-cache hits
    /// over the round (its counters' delta) and its KV block size (see
    /// [`crate::prefix_cache::block_tokens`]).
    pub fn engine(&mut self, agent: &str, counter_hits: Option<f64>, block: u32) {
        if let Some(e) = self.per_agent.get_mut(agent) {
            // vLLM counts its connector's hits apart from its own prefix cache's.
            let hits = match (counter_hits, e.external_hits, e.external_tier) {
                (Some(h), Some(x), OuterTier::Connector) => Some(h + x),
                (h, _, _) => h,
            };
            e.counter_hits = hits.filter(|h| h.is_finite() && *h >= 0.0);
            e.block = block.max(1);
        }
    }

    /// What agent `agent`'s engine said its KV connector's tiers gave in round 1 (before
    /// [`ColdEvidence::engine`]): a verdict that finds a warm cache then names the tier.
    pub fn external(&mut self, agent: &str, external_hits: Option<f64>, tier: OuterTier) {
        if let Some(e) = self.per_agent.get_mut(agent) {
            e.external_hits = external_hits.filter(|h| h.is_finite() && *h >= 0.0);
            e.external_tier = tier;
        }
    }

    /// The agents with round-1 records.
    pub fn agents(&self) -> Vec<String> {
        self.per_agent.keys().cloned().collect()
    }

    /// All agents' evidence together (one engine: a scenario on one agent).
    fn total(&self) -> AgentEvidence {
        let mut all = AgentEvidence {
            block: DEFAULT_BLOCK_TOKENS,
            ..AgentEvidence::default()
        };
        for e in self.per_agent.values() {
            all.judged += e.judged;
            all.cached_tokens += e.cached_tokens;
            all.excess.extend(e.excess.iter().cloned());
            all.requests.extend(e.requests.iter().copied());
            all.requests_without_cached += e.requests_without_cached;
            all.requests_without_share += e.requests_without_share;
            all.counter_hits = match (all.counter_hits, e.counter_hits) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            all.external_hits = match (all.external_hits, e.external_hits) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            if e.external_hits.is_some() {
                all.external_tier = e.external_tier;
            }
            all.block = e.block;
        }
        all
    }
}

impl AgentEvidence {
    /// Prefix groups of two or more requests, every one of which completed and found a
    /// block of 64 tokens or more (else more than 32 tokens) of its prompt cached: in a
    /// cold round the request that reached the group's common start first computed it, and
    /// no request outside the group began like it (not even its first 64 bytes, so shared
    /// no whole block that large; a chat template's few tokens may be shared by all).
    fn warm_groups(&self) -> Vec<WarmGroup> {
        let mut groups: BTreeMap<u32, Vec<&SentRequest>> = BTreeMap::new();
        for r in &self.requests {
            if let Some(g) = r.group {
                groups.entry(g).or_default().push(r);
            }
        }
        let floor = if self.block >= 64 { self.block - 1 } else { 32 };
        groups
            .into_iter()
            .filter(|(_, members)| members.len() >= 2)
            .filter_map(|(group, members)| {
                let cached: Option<Vec<u32>> = members.iter().map(|m| m.cached).collect();
                let min = cached?.into_iter().min()?;
                (min > floor).then_some(WarmGroup {
                    group,
                    requests: members.len() as u32,
                    min_cached_tokens: min,
                })
            })
            .collect()
    }

    /// Round 1's cached tokens (the requests' own, else the engine's counters) against the
    /// most a cold cache could have given its requests in the order sent; none when some
    /// request did not say what it shared, or nothing reported what the engine reused.
    fn bound(&self) -> Option<ColdBound> {
        if self.requests.is_empty() || self.requests_without_share > 0 {
            return None;
        }
        let (cached, from, counted): (u64, BoundSource, Vec<&SentRequest>) =
            if self.judged > 0 || self.requests_without_cached == 0 {
                let ok: Vec<&SentRequest> = self.requests.iter().filter(|r| r.ok).collect();
                if ok.is_empty() || ok.iter().any(|r| r.cached.is_none()) {
                    return None;
                }
                (self.cached_tokens, BoundSource::Requests, ok)
            } else {
                // The counters count every request the engine looked up, failed ones too.
                let hits = self.counter_hits?;
                let all = self.requests.iter().collect();
                (hits.round() as u64, BoundSource::Counters, all)
            };
        let limit: u64 = counted
            .iter()
            .map(|r| u64::from(r.share.cold_hit_tokens(self.block)))
            .sum();
        let slack = u64::from(self.block).max(limit / 50);
        Some(ColdBound {
            cached_tokens: cached,
            cold_limit_tokens: limit,
            block_tokens: self.block,
            requests: counted.len() as u32,
            from,
            exceeded: cached > limit + slack,
        })
    }
}

/// The evidence line when nothing showed what the engine reused, saying what is missing.
fn unreported(e: &AgentEvidence) -> String {
    if e.counter_hits.is_some() && e.requests_without_share > 0 {
        return "the engine reported no cached tokens per request, and the agent did not say what the requests shared in the order sent (an older agent), so the engine's prefix-cache counters could not be checked".to_owned();
    }
    "the engine reports neither cached tokens per request nor prefix-cache counters: start vLLM with --enable-prompt-tokens-details (SGLang: --enable-cache-report) and keep its /metrics reachable".to_owned()
}

/// A prefix group of round 1 none of whose requests computed its common start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmGroup {
    /// The group's first request (whose prompt began like all of theirs).
    pub group: u32,
    pub requests: u32,
    /// The fewest cached tokens any of them had.
    pub min_cached_tokens: u32,
}

impl WarmGroup {
    fn line(&self) -> String {
        format!(
            "round 1: all {} requests that began like request {} had at least {} of their tokens cached: none of them computed their common start, so the cache was not cold",
            self.requests,
            self.group,
            thousands(u64::from(self.min_cached_tokens))
        )
    }
}

/// Where [`ColdBound::cached_tokens`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundSource {
    /// The requests' own cached-token counts.
    Requests,
    /// The engine's prefix-cache hit counter over the round.
    Counters,
}

/// Round 1's cached tokens against the most a cache that was empty when it began could have
/// given its requests in the order sent ([`PromptShare::cold_hit_tokens`], summed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColdBound {
    pub cached_tokens: u64,
    pub cold_limit_tokens: u64,
    /// The engine's KV block size the limit was counted in.
    pub block_tokens: u32,
    /// The requests counted.
    pub requests: u32,
    pub from: BoundSource,
    /// More cached than the limit, beyond one block or 2 % of it.
    pub exceeded: bool,
}

impl ColdBound {
    fn line(&self) -> String {
        let what = match self.from {
            BoundSource::Requests => "cached tokens",
            BoundSource::Counters => "prefix-cache hits (the engine's counters)",
        };
        let verb = if self.exceeded { "more than" } else { "within" };
        let counters = match self.from {
            BoundSource::Requests => "",
            BoundSource::Counters => " (the engine reported no cached tokens per request, so round 1 was judged on its prefix-cache counters; vLLM reports them with --enable-prompt-tokens-details)",
        };
        format!(
            "round 1: {} {what} over {} requests, {verb} the {} a cold cache could have given them in the order sent ({}-token blocks){counters}",
            thousands(self.cached_tokens),
            self.requests,
            thousands(self.cold_limit_tokens),
            self.block_tokens
        )
    }
}

/// 46080 -> "46,080".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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

#[cfg(test)]
mod tests {
    //! Round 1 on a simulated engine, with the agent's own prefix tracker: requests on a
    //! few documents sent by a closed loop at some concurrency, reaching the engine in
    //! another order than they were sent (jitter), the engine reusing whatever blocks were
    //! registered when each arrived. From a cold cache every verdict is `verified`; from a
    //! cache that already held the documents every verdict is `failed`, whatever the
    //! concurrency and timing.
    use super::*;
    use crate::plan::IsolationPolicy;
    use crate::prefix_cache::{render, PrefixTracker};
    use crate::rng::Rng;
    use proptest::prelude::*;

    /// Characters per token in this test's engine (its tokenizer: one token per 4 bytes).
    const CHARS: usize = 4;

    fn tokens(bytes: usize) -> u32 {
        (bytes / CHARS) as u32
    }

    /// A text of `n` bytes, different for each seed.
    fn words(seed: u64, n: usize) -> String {
        let mut rng = Rng::new(seed);
        let mut s = String::new();
        while s.len() < n {
            s.push_str(["cache ", "block ", "token ", "model ", "prefix "][rng.below(5) as usize]);
        }
        s.truncate(n);
        s
    }

    struct Sim {
        block: usize,
        /// Texts registered (prompt bytes), each from when.
        registered: Vec<(String, f64)>,
    }

    impl Sim {
        /// Blocks of `text` found at `t`, in tokens (whole blocks, never the whole prompt).
        fn lookup(&self, text: &str, t: f64) -> u32 {
            let block_bytes = self.block * CHARS;
            let best = self
                .registered
                .iter()
                .filter(|(_, at)| *at <= t)
                .map(|(r, _)| {
                    r.bytes()
                        .zip(text.bytes())
                        .take_while(|(a, b)| a == b)
                        .count()
                })
                .max()
                .unwrap_or(0);
            let best = best.min(text.len().saturating_sub(1));
            tokens(best / block_bytes * block_bytes)
        }
    }

    /// One round: `docs` documents of `doc_bytes`, `per_doc` questions each, sent in a
    /// shuffled order by a closed loop of `concurrency`; each request reaches the engine
    /// `jitter` (up to, in ms) after it was sent and registers its blocks somewhere between
    /// its arrival and its first token. `warm`: the engine already holds every document.
    #[allow(clippy::too_many_arguments)]
    fn round(
        seed: u64,
        docs: usize,
        doc_bytes: usize,
        per_doc: usize,
        concurrency: usize,
        jitter: f64,
        block: usize,
        warm: bool,
    ) -> Vec<RequestRecord> {
        let mut rng = Rng::new(seed);
        let documents: Vec<String> = (0..docs)
            .map(|d| words(seed * 31 + d as u64, doc_bytes))
            .collect();
        let mut order: Vec<(usize, usize)> = (0..docs)
            .flat_map(|d| (0..per_doc).map(move |q| (d, q)))
            .collect();
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let mut sim = Sim {
            block,
            registered: Vec::new(),
        };
        if warm {
            for d in &documents {
                let text = render(&[("user".to_owned(), format!("{d}\n\nwarm"))]);
                sim.registered.push((text, -1.0));
            }
        }
        let mut tracker = PrefixTracker::default();
        // Slots of the closed loop: when each is free again.
        let mut free = vec![0.0f64; concurrency];
        let mut sent: Vec<(u32, String, f64, f64, f64)> = Vec::new();
        let mut records = Vec::new();
        for (id, (d, q)) in order.iter().enumerate() {
            let id = id as u32;
            let slot = (0..concurrency)
                .min_by(|a, b| free[*a].total_cmp(&free[*b]))
                .unwrap_or(0);
            let send = free[slot] + rng.unit() * 0.01;
            let question = words(
                seed * 977 + (d * 100 + q) as u64,
                40 + rng.below(200) as usize,
            );
            let text = render(&[(
                "user".to_owned(),
                format!("{}\n\n{question}", documents[*d]),
            )]);
            let share = tracker.send(&text, id);
            let group = share.group;
            let arrive = send + rng.unit() * jitter;
            let cached = sim.lookup(&text, arrive);
            let prompt = tokens(text.len());
            let prefill = 1.0 + f64::from(prompt - cached) * 0.01;
            let first = arrive + prefill;
            sim.registered
                .push((text.clone(), arrive + rng.unit() * prefill));
            let end = first + 5.0;
            free[slot] = end;
            sent.push((id, text.clone(), send, first, end));
            let mut r = RequestRecord::for_test(id, send, first - send, end);
            r.prompt_tokens = Some(prompt);
            r.prompt_tokens_client = prompt;
            r.cached_tokens = Some(cached);
            r.cold_prefix_tokens = Some(tokens(share.bytes));
            r.prefix_group = group;
            records.push(r);
        }
        // The generous share, as the agent takes it when a request ends: with every text
        // sent before then.
        for r in &mut records {
            let mut t = PrefixTracker::default();
            for (id, text, send, _, _) in &sent {
                if *send <= r.end_ms {
                    t.insert(text, *id);
                }
            }
            let own = &sent[r.request_id as usize].1;
            r.shared_prefix_tokens = Some(tokens(t.shared_bytes(own, 2)));
        }
        records
    }

    /// Round 1 after a clear, judged on `e`.
    fn after_a_clear(e: &ColdEvidence) -> IsolationInfo {
        IsolationInfo::new(
            IsolationPolicy::Clear,
            IsolationStatus::Cleared,
            "cleared".into(),
        )
        .judge(e)
    }

    fn verdict(records: &[RequestRecord], block: u32) -> IsolationInfo {
        let mut e = ColdEvidence::of(records);
        e.engine("a", None, block);
        after_a_clear(&e)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn a_cold_round_is_verified_at_any_concurrency_and_timing(
            seed in 0u64..1_000_000,
            docs in 1usize..5,
            doc_bytes in 600usize..6000,
            per_doc in 1usize..7,
            concurrency in prop::sample::select(vec![1usize, 2, 4, 8, 16]),
            jitter in 0.0f64..20.0,
            block in prop::sample::select(vec![1usize, 16, 128]),
        ) {
            let records = round(seed, docs, doc_bytes, per_doc, concurrency, jitter, block, false);
            let info = verdict(&records, block as u32);
            prop_assert_eq!(info.verdict, Verdict::Verified, "{:?}", info.evidence);
        }

        #[test]
        fn a_round_on_documents_already_cached_fails_at_any_concurrency_and_timing(
            seed in 0u64..1_000_000,
            docs in 1usize..5,
            doc_bytes in 600usize..6000,
            per_doc in 2usize..7,
            concurrency in prop::sample::select(vec![1usize, 2, 4, 8, 16]),
            jitter in 0.0f64..20.0,
            block in prop::sample::select(vec![1usize, 16, 128]),
        ) {
            let records = round(seed, docs, doc_bytes, per_doc, concurrency, jitter, block, true);
            let info = verdict(&records, block as u32);
            prop_assert_eq!(info.verdict, Verdict::Failed, "{:?}", info.evidence);
            prop_assert!(info.found_warm());
        }
    }

    /// The shape of the report: every request on a document found its start cached.
    #[test]
    fn a_warm_group_is_named() {
        let records = round(7, 2, 4000, 5, 2, 5.0, 128, true);
        let info = verdict(&records, 128);
        assert_eq!(info.verdict, Verdict::Failed);
        let line = info
            .evidence
            .iter()
            .find(|e| e.contains("none of them computed"))
            .expect("a warm group");
        assert!(
            line.starts_with("round 1: all 5 requests that began like request"),
            "{line}"
        );
    }

    /// Without per-request counts, the engine's counters are held to the same bound.
    #[test]
    fn counters_alone_judge_a_round() {
        for (warm, expected) in [(false, Verdict::Verified), (true, Verdict::Failed)] {
            let mut records = round(11, 3, 3000, 4, 4, 2.0, 16, warm);
            let hits: u32 = records.iter().filter_map(|r| r.cached_tokens).sum();
            for r in &mut records {
                r.cached_tokens = None;
            }
            let mut e = ColdEvidence::of(&records);
            e.engine("a", Some(f64::from(hits)), 16);
            let info = after_a_clear(&e);
            assert_eq!(info.verdict, expected, "{:?}", info.evidence);
            assert_eq!(
                info.round1_bound.as_ref().map(|b| b.from),
                Some(BoundSource::Counters)
            );
            assert!(
                info.evidence
                    .iter()
                    .any(|e| e.contains("judged on its prefix-cache counters")),
                "{:?}",
                info.evidence
            );
            let mut e = ColdEvidence::of(&records);
            e.engine("a", None, 16);
            let info = after_a_clear(&e);
            assert_eq!(info.verdict, Verdict::Unverified);
        }
    }
}
