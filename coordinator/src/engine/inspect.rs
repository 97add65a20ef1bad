//! `kvbench workload inspect`: what a workload is, and what a perfect prefix cache would
//! give it, without sending anything.
//!
//! Method: the round's requests are generated exactly as the agent generates them and
//! rendered into prompt text exactly as the engine sees it (chat template included); a
//! multi-turn history holds the replies kvbench-sim would give (the same length and shape
//! as any engine's). The prompts then pass, one at a time in the round's order, through the
//! same prefix-cache model as kvbench-sim (blocks of `--block-size` tokens, chained hashes,
//! the last prompt token always recomputed, LRU eviction at `--capacity-blocks`,
//! unbounded by default). Round 2 starts from round 1's cache, as it does after round 1.
//! The ratio is cached tokens over prompt tokens, as in the stats file. Requests in flight
//! at the same time cannot reuse each other's blocks, so a measured round 1 can fall short
//! of this figure; round 2 of a replayed workload reaches it.

use std::collections::BTreeSet;

use kvbench_common::dataset::{self, Dataset};
use kvbench_common::plan::{ApiFlavor, ScenarioConfig};
use kvbench_common::stats::Summary;
use kvbench_common::tokenizer::{completion_prompt, render_chat, tokenize};
use kvbench_common::tokenizer::{HfTokenizer, TokenCounter, Whitespace};
use kvbench_common::workload::generate_with;
use kvbench_sim::cache::{block_hashes, PrefixCache};
use serde::Serialize;

/// Five-number summary of a length distribution.
#[derive(Debug, Clone, Serialize)]
pub struct Lengths {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
}

impl Lengths {
    fn of(v: impl IntoIterator<Item = f64>) -> Option<Lengths> {
        let s = Summary::of(v)?;
        Some(Lengths {
            min: s.min,
            mean: s.mean,
            p50: s.median(),
            p90: s.percentile(90.0),
            max: s.max,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub requests: u32,
    pub conversations: usize,
    /// What the lengths are counted in: `tokenizer.json (PATH)`, or an estimate.
    pub lengths_in: String,
    /// The lengths are estimates (no tokenizer.json here; the engine's own counts differ).
    pub estimated: bool,
    pub input_tokens: Option<Lengths>,
    pub output_tokens: Option<Lengths>,
    /// KV blocks at the head of every round 1 prompt (a system prompt, say), in tokens.
    pub common_prefix_tokens: usize,
    /// Distinct prefixes after that common head: the number of distinct first blocks past
    /// it (documents, conversations, repositories, or unique prompts).
    pub distinct_prefixes: usize,
    /// Distinct KV blocks among round 1's prompts, and all of their blocks.
    pub distinct_blocks: usize,
    pub total_blocks: usize,
    pub block_size: usize,
    pub capacity_blocks: Option<usize>,
    /// Cached over prompt tokens with a perfect cache, one request at a time.
    pub round1_hit_ratio: f64,
    pub round2_hit_ratio: f64,
}

/// Every request of a round as the engine sees it: (prompt text, max_tokens).
/// The scenario's token counter: its tokenizer.json, or one token per word.
fn counter(cfg: &ScenarioConfig) -> anyhow::Result<Box<dyn TokenCounter>> {
    Ok(match &cfg.tokenizer {
        None => Box::new(Whitespace),
        Some(p) => {
            let bytes = std::fs::read(p)
                .map_err(|e| anyhow::anyhow!("cannot read tokenizer {}: {e}", p.display()))?;
            Box::new(HfTokenizer::from_bytes(&bytes).map_err(anyhow::Error::msg)?)
        }
    })
}

fn rendered(cfg: &ScenarioConfig, round: u32) -> anyhow::Result<(Vec<(String, u32)>, usize)> {
    let counter = counter(cfg)?;
    let conversations = match &cfg.dataset {
        None => generate_with(&cfg.workload, round, &*counter).conversations,
        Some(spec) => match dataset::load(spec, cfg.workload.num_requests as usize)
            .map_err(anyhow::Error::msg)?
        {
            Dataset::Conversations(c) => c,
            Dataset::Trace(t) => dataset::trace_conversations(&t, false, 1.0),
        },
    };
    let mut out = Vec::new();
    for c in &conversations {
        let mut messages: Vec<(String, String)> = Vec::new();
        if let Some(s) = &c.system {
            messages.push(("system".into(), s.clone()));
        }
        messages.extend(c.prefix.iter().cloned());
        for (t, user) in c.user_turns.iter().enumerate() {
            messages.push(("user".into(), user.clone()));
            let prompt = match cfg.api {
                ApiFlavor::Chat => {
                    render_chat(messages.iter().map(|(r, c)| (r.as_str(), c.as_str())))
                }
                ApiFlavor::Completions => completion_prompt(&messages),
            };
            let max_tokens = c
                .max_tokens
                .get(t)
                .copied()
                .unwrap_or(cfg.workload.output_tokens);
            if t + 1 < c.user_turns.len() {
                messages.push((
                    "assistant".into(),
                    kvbench_sim::reply_text(&prompt, max_tokens),
                ));
            }
            out.push((prompt, max_tokens));
        }
    }
    Ok((out, conversations.len()))
}

/// Cached tokens / prompt tokens of `prompts` through `cache`, one at a time.
fn hit_ratio(cache: &mut PrefixCache, prompts: &[(String, u32)]) -> f64 {
    let (mut cached, mut total) = (0usize, 0usize);
    for (p, _) in prompts {
        let tokens = tokenize(p);
        let hashes = block_hashes(&tokens, cache.block_size());
        let hits = cache.lookup_and_hold(&hashes, tokens.len());
        let n = cache.insert_and_hold(&hashes[hits..]);
        cache.release(&hashes[..hits + n]);
        cached += hits * cache.block_size();
        total += tokens.len();
    }
    if total == 0 {
        0.0
    } else {
        cached as f64 / total as f64
    }
}

pub fn inspect_config(
    name: &str,
    cfg: &ScenarioConfig,
    block_size: usize,
    capacity: Option<usize>,
) -> anyhow::Result<Inspection> {
    let block_size = block_size.max(1);
    let (r1, conversations) = rendered(cfg, 1)?;
    // A dataset is the same in every round; generated workloads are generated again.
    let (r2, _) = if cfg.dataset.is_some() {
        (r1.clone(), 0)
    } else {
        rendered(cfg, 2)?
    };
    let chains: Vec<Vec<u64>> = r1
        .iter()
        .map(|(p, _)| block_hashes(&tokenize(p), block_size))
        .collect();
    let common = chains.first().map_or(0, |first| {
        chains
            .iter()
            .map(|c| c.iter().zip(first).take_while(|(a, b)| a == b).count())
            .min()
            .unwrap_or(0)
    });
    let heads: BTreeSet<u64> = chains
        .iter()
        .filter_map(|c| c.get(common).copied())
        .collect();
    let blocks: BTreeSet<u64> = chains.iter().flatten().copied().collect();
    let total_blocks: usize = chains.iter().map(Vec::len).sum();
    let mut cache = PrefixCache::new(block_size, capacity.unwrap_or(usize::MAX));
    let round1_hit_ratio = hit_ratio(&mut cache, &r1);
    let round2_hit_ratio = hit_ratio(&mut cache, &r2);
    Ok(Inspection {
        name: name.to_owned(),
        kind: cfg.workload.kind.label().to_owned(),
        requests: r1.len() as u32,
        conversations,
        lengths_in: match (&cfg.tokenizer, cfg.engine_tokenizer) {
            (Some(_), _) => cfg.tokenizer_label(),
            (None, true) => "words: an estimate here (tokenizer: engine measures with the engine's /tokenize at run time, which inspect does not reach)".into(),
            (None, false) => "words: an estimate (one token per word; give a tokenizer.json, or tokenizer: engine, for the engine's own counts)".into(),
        },
        estimated: cfg.tokenizer.is_none(),
        input_tokens: match &cfg.tokenizer {
            // The prompt as rendered for the engine, in the tokenizer's tokens.
            Some(_) => {
                let c = counter(cfg)?;
                Lengths::of(r1.iter().map(|(p, _)| c.count(p) as f64))
            }
            None => Lengths::of(r1.iter().map(|(p, _)| tokenize(p).len() as f64)),
        },
        output_tokens: Lengths::of(r1.iter().map(|(_, m)| f64::from(*m))),
        common_prefix_tokens: common * block_size,
        distinct_prefixes: heads.len(),
        distinct_blocks: blocks.len(),
        total_blocks,
        block_size,
        capacity_blocks: capacity,
        round1_hit_ratio,
        round2_hit_ratio,
    })
}
