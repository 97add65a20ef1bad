//! Deterministic workload generators for the five seed workload types.
//!
//! A workload is generated from `(kind, parameters, seed, round)` on the agent: the
//! coordinator sends only the compact [`WorkloadSpec`]. Rounds after the first replay round
//! 1's exact prompts, so the only difference between rounds is the engine's cache state;
//! `cold_start` draws fresh prompts every round.
//!
//! Every request is one turn of a [`Conversation`]; single-shot types are conversations of
//! one turn. Token counts below are in kvbench's tokenizer (whitespace-separated words, see
//! [`crate::tokenizer`]); the generators hit them exactly.
//!
//! | type | default shape | what it shows |
//! |---|---|---|
//! | `long_context_high_reuse` | 20 requests over 4 documents of 4,000 tokens, 5 questions each (24 tokens), grouped by document; 64 output tokens | the cache effect at its clearest: round 2 reuses whole documents |
//! | `multi_turn_conversation` | 4 conversations x 5 turns, a shared 400-token system prompt, 80-token user turns resending the whole history; 64 output tokens | reuse of a growing history within and across rounds |
//! | `code_generation` | 10 requests sharing a 2,000-token repository context, 32-token instructions; 256 output tokens | a shared prefix with decode-heavy requests |
//! | `batch_processing` | 20 unique 600-token documents under one 200-token instruction prefix; 32 output tokens | a short shared prefix over mostly unique input |
//! | `cold_start` | 10 unique 1,000-token prompts with no shared prefix, fresh every round; 64 output tokens | the no-reuse baseline |

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::tokenizer::{TokenCounter, Whitespace, CODE_WORDS, WORDS};

/// The five seed workload types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    LongContextHighReuse,
    MultiTurnConversation,
    CodeGeneration,
    BatchProcessing,
    ColdStart,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 5] = [
        WorkloadKind::LongContextHighReuse,
        WorkloadKind::MultiTurnConversation,
        WorkloadKind::CodeGeneration,
        WorkloadKind::BatchProcessing,
        WorkloadKind::ColdStart,
    ];

    pub fn label(self) -> &'static str {
        match self {
            WorkloadKind::LongContextHighReuse => "long_context_high_reuse",
            WorkloadKind::MultiTurnConversation => "multi_turn_conversation",
            WorkloadKind::CodeGeneration => "code_generation",
            WorkloadKind::BatchProcessing => "batch_processing",
            WorkloadKind::ColdStart => "cold_start",
        }
    }

    pub fn from_label(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.label() == s)
    }

    pub fn default_num_requests(self) -> u32 {
        match self {
            WorkloadKind::LongContextHighReuse => 20,
            WorkloadKind::MultiTurnConversation => 20,
            WorkloadKind::CodeGeneration => 10,
            WorkloadKind::BatchProcessing => 20,
            WorkloadKind::ColdStart => 10,
        }
    }

    pub fn default_output_tokens(self) -> u32 {
        match self {
            WorkloadKind::LongContextHighReuse => 64,
            WorkloadKind::MultiTurnConversation => 64,
            WorkloadKind::CodeGeneration => 256,
            WorkloadKind::BatchProcessing => 32,
            WorkloadKind::ColdStart => 64,
        }
    }

    fn stream_id(self) -> u64 {
        self as u64 + 1
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Per-type sizes, all optional: unset fields take the documented defaults. Each type
/// reads only the fields named in its row of the module table; the plan loader rejects
/// the others.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<DocumentOrder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think_time_ms: Option<u32>,
}

/// In which order `long_context_high_reuse` asks about its documents: it decides whether a
/// document's blocks survive eviction until its next question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentOrder {
    Grouped,
    Interleaved,
    Random,
}

/// How long each request's output is (`max_tokens`, per request, the same in every round).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "distribution", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputDist {
    /// Every request asks for `output_tokens`.
    Fixed,
    /// Uniform over `min..=max`.
    Uniform { min: u32, max: u32 },
    /// Normal, rounded, at least 1.
    Normal { mean: f64, std: f64 },
    /// Log-normal with this mean and shape `sigma` (of the underlying normal), at least 1.
    Lognormal { mean: f64, sigma: f64 },
}

/// Output lengths are capped here whatever the distribution draws.
pub const MAX_OUTPUT_TOKENS: u32 = 1 << 20;

/// Request (and conversation) ids of warmup requests start here: measured requests count
/// from 0 and stay far below it (at most `limits::MAX_REQUESTS` per request set).
pub const WARMUP_REQUEST_ID_BASE: u32 = 1 << 31;

impl OutputDist {
    /// `max_tokens` of request `request_id`: a function of the seed and the id only.
    pub fn draw(&self, seed: u64, request_id: u32, fixed: u32) -> u32 {
        let mut r = Rng::derive(seed, &[0x6f75_7470, u64::from(request_id)]);
        let v = match *self {
            OutputDist::Fixed => f64::from(fixed),
            OutputDist::Uniform { min, max } => {
                let (lo, hi) = (min.min(max), min.max(max));
                f64::from(lo) + r.below(u64::from(hi - lo) + 1) as f64
            }
            OutputDist::Normal { mean, std } => (mean + std * r.normal()).round(),
            OutputDist::Lognormal { mean, sigma } => {
                let mu = mean.max(1.0).ln() - sigma * sigma / 2.0;
                (mu + sigma * r.normal()).exp().round()
            }
        };
        v.clamp(1.0, f64::from(MAX_OUTPUT_TOKENS)) as u32
    }

    /// The mean output length, for display and defaults.
    pub fn mean(&self, fixed: u32) -> f64 {
        match *self {
            OutputDist::Fixed => f64::from(fixed),
            OutputDist::Uniform { min, max } => (f64::from(min) + f64::from(max)) / 2.0,
            OutputDist::Normal { mean, .. } | OutputDist::Lognormal { mean, .. } => mean,
        }
    }
}

impl WorkloadParams {
    /// The parameter names a workload type reads.
    pub fn accepted(kind: WorkloadKind) -> &'static [&'static str] {
        match kind {
            WorkloadKind::LongContextHighReuse => &[
                "documents",
                "document_tokens",
                "question_tokens",
                "system_tokens",
                "order",
            ],
            WorkloadKind::MultiTurnConversation => &[
                "conversations",
                "turns",
                "system_tokens",
                "user_tokens",
                "think_time_ms",
            ],
            WorkloadKind::CodeGeneration => &["context_tokens", "instruction_tokens"],
            WorkloadKind::BatchProcessing => &["document_tokens", "instruction_tokens"],
            WorkloadKind::ColdStart => &["prompt_tokens"],
        }
    }

    /// The names of the fields that are set.
    pub fn set_fields(&self) -> Vec<&'static str> {
        let all = [
            ("documents", self.documents),
            ("document_tokens", self.document_tokens),
            ("question_tokens", self.question_tokens),
            ("conversations", self.conversations),
            ("turns", self.turns),
            ("system_tokens", self.system_tokens),
            ("user_tokens", self.user_tokens),
            ("context_tokens", self.context_tokens),
            ("instruction_tokens", self.instruction_tokens),
            ("prompt_tokens", self.prompt_tokens),
            ("order", self.order.map(|o| o as u32)),
            ("think_time_ms", self.think_time_ms),
        ];
        all.into_iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k)
            .collect()
    }
}

/// What the agent needs to generate a round's requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub kind: WorkloadKind,
    pub seed: u64,
    pub num_requests: u32,
    /// Output tokens of every request when `output` is `Fixed`; else the mean, for display.
    pub output_tokens: u32,
    pub output: OutputDist,
    pub params: WorkloadParams,
}

/// A sequence of user turns sent one after another; each turn resends the whole history.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: u32,
    /// Request id of the first turn; turn `t` has id `first_request_id + t`.
    pub first_request_id: u32,
    pub system: Option<String>,
    pub user_turns: Vec<String>,
    /// `max_tokens` of each turn (drawn from the output-length distribution).
    pub max_tokens: Vec<u32>,
    /// Pause between receiving a turn's reply and sending the next turn.
    pub think_time_ms: u32,
    /// Messages sent after the system prompt and before the first user turn, as they are
    /// (a dataset line's earlier messages).
    pub prefix: Vec<(String, String)>,
    /// When the first turn is due, in ms from the round's start (a trace's timestamp).
    pub due_ms: Option<f64>,
}

/// One round's requests.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundWorkload {
    pub conversations: Vec<Conversation>,
}

impl RoundWorkload {
    pub fn total_requests(&self) -> u32 {
        self.conversations
            .iter()
            .map(|c| c.user_turns.len() as u32)
            .sum()
    }
}

/// Generates `round`'s requests (rounds are 1-based), lengths in kvbench's tokens.
pub fn generate(spec: &WorkloadSpec, round: u32) -> RoundWorkload {
    generate_with(spec, round, &Whitespace)
}

/// Generates `round`'s requests with every text segment fitted to its requested length in
/// `counter`'s tokens (a real tokenizer's, for exact prompt lengths).
pub fn generate_with(spec: &WorkloadSpec, round: u32, counter: &dyn TokenCounter) -> RoundWorkload {
    let g = Generator { spec, counter };
    let mut conversations = match spec.kind {
        WorkloadKind::LongContextHighReuse => g.long_context(),
        WorkloadKind::MultiTurnConversation => g.multi_turn(),
        WorkloadKind::CodeGeneration => g.code_generation(),
        WorkloadKind::BatchProcessing => g.batch(),
        WorkloadKind::ColdStart => g.cold_start(round),
    };
    for c in &mut conversations {
        c.max_tokens = (0..c.user_turns.len() as u32)
            .map(|t| {
                spec.output
                    .draw(spec.seed, c.first_request_id + t, spec.output_tokens)
            })
            .collect();
    }
    RoundWorkload { conversations }
}

/// One-request conversations, request `i` being conversation `i`: `(system, user)` each.
fn singles(requests: impl IntoIterator<Item = (Option<String>, String)>) -> Vec<Conversation> {
    requests
        .into_iter()
        .enumerate()
        .map(|(i, (system, user))| Conversation {
            id: i as u32,
            first_request_id: i as u32,
            system,
            user_turns: vec![user],
            max_tokens: Vec::new(),
            think_time_ms: 0,
            prefix: Vec::new(),
            due_ms: None,
        })
        .collect()
}

/// The text of one workload type: every piece drawn from its own seeded stream
/// (`[type, part, index...]`), so that a piece never depends on the others.
struct Generator<'a> {
    spec: &'a WorkloadSpec,
    counter: &'a dyn TokenCounter,
}

impl Generator<'_> {
    fn rng(&self, path: &[u64]) -> Rng {
        let mut full = vec![self.spec.kind.stream_id()];
        full.extend_from_slice(path);
        Rng::derive(self.spec.seed, &full)
    }

    fn prose(&self, path: &[u64], tokens: usize) -> String {
        fit(&mut self.rng(path), tokens, WORDS, true, self.counter)
    }

    fn long_context(&self) -> Vec<Conversation> {
        let (p, n) = (&self.spec.params, self.spec.num_requests);
        let documents = p.documents.unwrap_or(n.div_ceil(5)).clamp(1, n.max(1));
        let doc_tokens = p.document_tokens.unwrap_or(4000) as usize;
        let q_tokens = p.question_tokens.unwrap_or(24) as usize;
        let system = self.prose(&[0], p.system_tokens.unwrap_or(32) as usize);
        let docs: Vec<String> = (0..documents)
            .map(|d| self.prose(&[1, u64::from(d)], doc_tokens))
            .collect();
        let per_doc = n.div_ceil(documents);
        // Document of each request: grouped (all questions on a document in a row),
        // interleaved (documents in turn) or random (a seeded shuffle of grouped).
        let mut doc_of: Vec<u32> = (0..n).map(|i| (i / per_doc).min(documents - 1)).collect();
        match p.order.unwrap_or(DocumentOrder::Grouped) {
            DocumentOrder::Grouped => {}
            DocumentOrder::Interleaved => doc_of = (0..n).map(|i| i % documents).collect(),
            DocumentOrder::Random => {
                let mut r = self.rng(&[5]);
                for i in (1..doc_of.len()).rev() {
                    doc_of.swap(i, r.below(i as u64 + 1) as usize);
                }
            }
        }
        singles((0..n).map(|i| {
            let q = self.prose(&[2, u64::from(i)], q_tokens);
            let doc = &docs[doc_of[i as usize] as usize];
            (Some(system.clone()), format!("{doc}\n\n{q}"))
        }))
    }

    fn multi_turn(&self) -> Vec<Conversation> {
        let (p, n) = (&self.spec.params, self.spec.num_requests);
        let turns = p.turns.unwrap_or(5).max(1);
        let convs = p.conversations.unwrap_or(n.div_ceil(turns)).max(1);
        let user_tokens = p.user_tokens.unwrap_or(80) as usize;
        let system = self.prose(&[0], p.system_tokens.unwrap_or(400) as usize);
        // Spread exactly n requests over the conversations, turns-at-most each.
        let mut conversations = Vec::new();
        let mut left = n;
        let mut next_id = 0;
        for c in 0..convs {
            let t = left.div_ceil(convs - c).min(turns);
            if t == 0 {
                break;
            }
            let user_turns = (0..t)
                .map(|j| self.prose(&[3, u64::from(c), u64::from(j)], user_tokens))
                .collect();
            conversations.push(Conversation {
                id: c,
                first_request_id: next_id,
                system: Some(system.clone()),
                user_turns,
                max_tokens: Vec::new(),
                think_time_ms: p.think_time_ms.unwrap_or(0),
                prefix: Vec::new(),
                due_ms: None,
            });
            next_id += t;
            left -= t;
        }
        conversations
    }

    fn code_generation(&self) -> Vec<Conversation> {
        let (p, n) = (&self.spec.params, self.spec.num_requests);
        let ctx_tokens = p.context_tokens.unwrap_or(2000) as usize;
        let instr_tokens = p.instruction_tokens.unwrap_or(32) as usize;
        let context = fit(
            &mut self.rng(&[0]),
            ctx_tokens,
            CODE_WORDS,
            false,
            self.counter,
        );
        singles((0..n).map(|i| {
            let instr = self.prose(&[2, u64::from(i)], instr_tokens);
            (Some(context.clone()), instr)
        }))
    }

    fn batch(&self) -> Vec<Conversation> {
        let (p, n) = (&self.spec.params, self.spec.num_requests);
        let doc_tokens = p.document_tokens.unwrap_or(600) as usize;
        let instruction = self.prose(&[0], p.instruction_tokens.unwrap_or(200) as usize);
        singles((0..n).map(|i| {
            let doc = self.prose(&[1, u64::from(i)], doc_tokens);
            (Some(instruction.clone()), doc)
        }))
    }

    fn cold_start(&self, round: u32) -> Vec<Conversation> {
        let (p, n) = (&self.spec.params, self.spec.num_requests);
        let tokens = p.prompt_tokens.unwrap_or(1000).max(1) as usize;
        singles((0..n).map(|i| {
            // The first token is unique to (seed, round, request), so no two prompts, in
            // this round or any other, share even their first KV block.
            let mut r = self.rng(&[4, u64::from(round), u64::from(i)]);
            let nonce = format!("[{:016x}]", r.next_u64());
            let left = tokens.saturating_sub(self.counter.count(&nonce)).max(1);
            let body = fit(&mut r, left, WORDS, true, self.counter);
            (None, format!("{nonce} {body}"))
        }))
    }
}

/// `n` warmup requests: unique prompts (their first token is unique to the seed and the
/// request) of at most 256 tokens, so that they share no KV block with the workload or each
/// other and cannot warm the cache the round measures. Their request ids start at
/// [`WARMUP_REQUEST_ID_BASE`], so that (round, request id) stays unique in the records.
pub fn warmup(spec: &WorkloadSpec, n: u32) -> RoundWorkload {
    let tokens = 256usize;
    let conversations = (0..n)
        .map(|i| {
            let mut r = Rng::derive(spec.seed, &[0x7761_726d, u64::from(i)]);
            let nonce = format!("[warmup-{:016x}]", r.next_u64());
            Conversation {
                id: WARMUP_REQUEST_ID_BASE + i,
                first_request_id: WARMUP_REQUEST_ID_BASE + i,
                system: None,
                user_turns: vec![format!("{nonce} {}", prose(&mut r, tokens - 1))],
                max_tokens: vec![spec.output_tokens.clamp(1, 16)],
                think_time_ms: 0,
                prefix: Vec::new(),
                due_ms: None,
            }
        })
        .collect();
    RoundWorkload { conversations }
}

/// The `pool`-th request set of a round (pool 0 is [`generate`]'s). A round limited by
/// duration rather than count draws pool after pool, each from a seed derived from the
/// workload's, with request and conversation ids continuing where the last pool ended; so
/// no prompt repeats within a round, and every round draws the same sequence.
pub fn generate_pool(
    spec: &WorkloadSpec,
    round: u32,
    pool: u32,
    first_id: u32,
    first_conv: u32,
    counter: &dyn TokenCounter,
) -> RoundWorkload {
    let mut w = if pool == 0 {
        generate_with(spec, round, counter)
    } else {
        let mut s = spec.clone();
        s.seed = Rng::derive(spec.seed, &[0x706f_6f6c, u64::from(pool)]).next_u64();
        generate_with(&s, round, counter)
    };
    for c in &mut w.conversations {
        c.id += first_conv;
        c.first_request_id += first_id;
    }
    w
}

/// `n` tokens of text that reads like prose (sentences of 8-20 words).
pub fn prose(rng: &mut Rng, n: usize) -> String {
    words_text(rng, n, WORDS, true)
}

/// Text of as many words as makes `n` of `counter`'s tokens (the closest count it can
/// reach), drawn from `rng` as [`prose`] draws it. With kvbench's own tokens this is exactly
/// `n` words; with a real tokenizer the word count is searched (the text of `k` words is a
/// function of `k` and the generator's state, so the search is deterministic).
fn fit(
    rng: &mut Rng,
    n: usize,
    words: &[&str],
    sentences: bool,
    counter: &dyn TokenCounter,
) -> String {
    if counter.is_words() || n == 0 {
        return words_text(rng, n, words, sentences);
    }
    let start = rng.clone();
    let make = |k: usize| {
        let mut r = start.clone();
        let t = words_text(&mut r, k, words, sentences);
        (counter.count(&t), t, r)
    };
    // Bracket: counts grow with k (not strictly: a word may merge with punctuation).
    let mut hi = n.max(1);
    while make(hi).0 < n && hi < n * 16 {
        hi *= 2;
    }
    let mut lo = 0;
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if make(mid).0 <= n {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let (a, b) = (make(lo.max(1)), make(hi));
    let best = if a.0.abs_diff(n) <= b.0.abs_diff(n) {
        a
    } else {
        b
    };
    *rng = best.2;
    best.1
}

fn words_text(rng: &mut Rng, n: usize, words: &[&str], sentences: bool) -> String {
    let mut out = String::with_capacity(n * 7);
    let mut left_in_sentence = 0;
    for i in 0..n {
        if i > 0 {
            out.push(if !sentences && rng.below(8) == 0 {
                '\n'
            } else {
                ' '
            });
        }
        let w = words[rng.below(words.len() as u64) as usize];
        if sentences && left_in_sentence == 0 {
            left_in_sentence = 8 + rng.below(13);
            let mut cs = w.chars();
            if let Some(c) = cs.next() {
                out.extend(c.to_uppercase());
                out.push_str(cs.as_str());
            }
        } else {
            out.push_str(w);
        }
        if sentences {
            left_in_sentence -= 1;
            if left_in_sentence == 0 || i + 1 == n {
                out.push('.');
                left_in_sentence = 0;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::count_tokens;

    fn spec(kind: WorkloadKind) -> WorkloadSpec {
        WorkloadSpec {
            kind,
            seed: 42,
            num_requests: kind.default_num_requests(),
            output_tokens: kind.default_output_tokens(),
            output: OutputDist::Fixed,
            params: WorkloadParams::default(),
        }
    }

    #[test]
    fn every_type_is_deterministic_and_sized() {
        for kind in WorkloadKind::ALL {
            let s = spec(kind);
            let a = generate(&s, 1);
            assert_eq!(a, generate(&s, 1), "{kind}");
            assert_eq!(a.total_requests(), s.num_requests, "{kind}");
            let ids: Vec<u32> = a
                .conversations
                .iter()
                .flat_map(|c| (0..c.user_turns.len() as u32).map(move |t| c.first_request_id + t))
                .collect();
            assert_eq!(ids, (0..s.num_requests).collect::<Vec<_>>(), "{kind}");
        }
    }

    #[test]
    fn later_rounds_replay_round_one_except_cold_start() {
        for kind in WorkloadKind::ALL {
            let s = spec(kind);
            let same = generate(&s, 1) == generate(&s, 2);
            assert_eq!(same, kind != WorkloadKind::ColdStart, "{kind}");
        }
        let s = spec(WorkloadKind::LongContextHighReuse);
        let mut other = s.clone();
        other.seed = 43;
        assert_ne!(generate(&s, 1), generate(&other, 1));
    }

    #[test]
    fn token_lengths_are_hit_exactly() {
        let s = spec(WorkloadKind::LongContextHighReuse);
        let w = generate(&s, 1);
        let c = &w.conversations[0];
        assert_eq!(count_tokens(c.system.as_deref().unwrap_or("")), 32);
        assert_eq!(count_tokens(&c.user_turns[0]), 4000 + 24);
        let s = spec(WorkloadKind::ColdStart);
        let w = generate(&s, 3);
        assert_eq!(count_tokens(&w.conversations[5].user_turns[0]), 1000);
        let s = spec(WorkloadKind::CodeGeneration);
        let w = generate(&s, 1);
        assert_eq!(
            count_tokens(w.conversations[0].system.as_deref().unwrap_or("")),
            2000
        );
    }

    #[test]
    fn long_context_groups_questions_by_document() {
        let s = spec(WorkloadKind::LongContextHighReuse);
        let w = generate(&s, 1);
        let doc = |i: usize| {
            w.conversations[i].user_turns[0]
                .split("\n\n")
                .next()
                .map(str::to_owned)
        };
        assert_eq!(doc(0), doc(4));
        assert_ne!(doc(4), doc(5));
        assert_ne!(
            w.conversations[0].user_turns[0],
            w.conversations[1].user_turns[0]
        );
    }

    #[test]
    fn output_lengths_follow_their_distribution_and_replay() {
        let mut s = spec(WorkloadKind::ColdStart);
        s.num_requests = 2000;
        let lens = |s: &WorkloadSpec, round| -> Vec<u32> {
            generate(s, round)
                .conversations
                .iter()
                .flat_map(|c| c.max_tokens.clone())
                .collect()
        };
        assert!(lens(&s, 1).iter().all(|l| *l == 64));
        for (dist, mean) in [
            (OutputDist::Uniform { min: 10, max: 30 }, 20.0),
            (
                OutputDist::Normal {
                    mean: 200.0,
                    std: 20.0,
                },
                200.0,
            ),
            (
                OutputDist::Lognormal {
                    mean: 150.0,
                    sigma: 0.5,
                },
                150.0,
            ),
        ] {
            s.output = dist;
            let l = lens(&s, 1);
            assert_eq!(l, lens(&s, 2), "{dist:?}: the same lengths every round");
            let m = l.iter().map(|x| f64::from(*x)).sum::<f64>() / l.len() as f64;
            assert!((m - mean).abs() < mean * 0.05, "{dist:?}: mean {m}");
            assert!(l.iter().all(|x| *x >= 1));
        }
        s.output = OutputDist::Uniform { min: 10, max: 30 };
        let l = lens(&s, 1);
        assert!(l.iter().all(|x| (10..=30).contains(x)) && l.contains(&10) && l.contains(&30));
    }

    #[test]
    fn document_order_is_a_parameter() {
        let mut s = spec(WorkloadKind::LongContextHighReuse);
        let docs = |s: &WorkloadSpec| -> Vec<String> {
            generate(s, 1)
                .conversations
                .iter()
                .map(|c| {
                    c.user_turns[0]
                        .split("\n\n")
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(40)
                        .collect()
                })
                .collect()
        };
        let grouped = docs(&s);
        s.params.order = Some(DocumentOrder::Interleaved);
        let inter = docs(&s);
        assert_eq!(inter[0], grouped[0]);
        assert_eq!(
            inter[1], grouped[5],
            "interleaved: the second request asks about document 2"
        );
        assert_eq!(inter[4], inter[0]);
        s.params.order = Some(DocumentOrder::Random);
        let random = docs(&s);
        assert_ne!(random, grouped);
        let (mut a, mut b) = (random.clone(), grouped.clone());
        a.sort();
        b.sort();
        assert_eq!(a, b, "the same questions, in another order");
    }

    #[test]
    fn multi_turn_spreads_requests_over_conversations() {
        let mut s = spec(WorkloadKind::MultiTurnConversation);
        s.num_requests = 7;
        s.params.turns = Some(3);
        let w = generate(&s, 1);
        let turns: Vec<usize> = w.conversations.iter().map(|c| c.user_turns.len()).collect();
        assert_eq!(turns.iter().sum::<usize>(), 7);
        assert!(turns.iter().all(|t| *t <= 3));
    }
}
