//! The report's "Hits against a perfect cache": per round, the hit ratio the engine
//! measured, the one a perfect prefix cache would have given the requests as they were
//! sent, their ratio (the cache's efficiency) and, under 90 %, where the shortfall is; and
//! the conclusion's line on caches too small for their workload.

use std::fmt::Write as _;

use kvbench_common::stats::efficiency::{CacheEfficiency, HitSource, Shortfall, EFFICIENT};

use super::markdown::{cell, ran, ratio};
use crate::output::SavedRun;

/// The rounds with an efficiency, by scenario.
fn rounds(saved: &SavedRun) -> Vec<(&str, u32, &CacheEfficiency)> {
    ran(saved)
        .flat_map(|(name, st)| {
            st.rounds
                .iter()
                .filter_map(move |r| Some((name, r.round, r.cache_efficiency.as_ref()?)))
        })
        .collect()
}

/// The section; nothing when no round has the figures (an engine that reports no cached
/// tokens, or records from an older agent).
pub fn section(out: &mut String, saved: &SavedRun) {
    let rows = rounds(saved);
    if rows.is_empty() {
        return;
    }
    out.push_str("## Hits against a perfect cache\n\nWhat a perfect prefix cache (unbounded, never evicting, the engine's block size) would have given the requests as they were sent: a request reuses the prompts of earlier rounds and those of its round whose first token had come back before it went out. Efficiency is the measured hits over the perfect ones.\n\n| scenario | round | cache hit (measured) | cache hit (perfect cache) | efficiency | block tokens | where the shortfall is |\n|---|---|---|---|---|---|---|\n");
    for (name, round, e) in &rows {
        let from = match e.from {
            HitSource::Requests => "",
            HitSource::Counters => " (engine counters)",
        };
        let _ = writeln!(
            out,
            "| {} | {round} | {}{from} | {} | {} | {} | {} |",
            cell(name),
            ratio(Some(e.hit_ratio)),
            ratio(Some(e.perfect_hit_ratio)),
            e.efficiency
                .map_or("- (nothing to reuse)".to_owned(), |x| format!(
                    "{:.1}%",
                    x * 100.0
                )),
            e.block_tokens,
            if e.shortfall.is_empty() {
                "-".to_owned()
            } else {
                cell(
                    &e.shortfall
                        .iter()
                        .map(Shortfall::line)
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            }
        );
    }
    out.push('\n');
}

/// The conclusion's lines: each scenario whose cache fell short of a perfect one, with its
/// least efficient round and why.
pub fn conclusion(out: &mut String, saved: &SavedRun) {
    let mut worst: Vec<(&str, u32, &CacheEfficiency)> = Vec::new();
    for (name, round, e) in rounds(saved) {
        let Some(x) = e.efficiency.filter(|x| *x < EFFICIENT) else {
            continue;
        };
        match worst.iter_mut().find(|w| w.0 == name) {
            Some(w) if w.2.efficiency.is_some_and(|y| y > x) => *w = (name, round, e),
            Some(_) => {}
            None => worst.push((name, round, e)),
        }
    }
    for (name, round, e) in worst {
        let too_small = e.shortfall.iter().any(|s| {
            matches!(
                s,
                Shortfall::CacheTooSmall { .. } | Shortfall::KvFull { .. }
            )
        });
        let _ = writeln!(
            out,
            "- {} **{}**: round {round} reused {} of what a perfect cache would have ({} against {} of the prompt tokens): {}.",
            if too_small { "The cache is too small for" } else { "The cache fell short for" },
            cell(name),
            ratio(e.efficiency),
            ratio(Some(e.hit_ratio)),
            ratio(Some(e.perfect_hit_ratio)),
            e.shortfall
                .iter()
                .map(Shortfall::line)
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
}

/// "Hits by cache tier": per round of an engine with a tier behind its own prefix cache
/// (vLLM's KV connector: CPU offload, LMCache, Mooncake; SGLang's HiCache host and storage
/// tiers), the cached tokens each tier gave and what the stores said; nothing when no round
/// has one.
pub fn tiers(out: &mut String, saved: &SavedRun) {
    let rows: Vec<_> = ran(saved)
        .flat_map(|(name, st)| {
            st.rounds
                .iter()
                .filter_map(move |r| Some((name, r, r.cache_tiers.as_ref()?)))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    out.push_str("## Hits by cache tier\n\nCached prompt tokens by the tier that gave them: the engine's own prefix cache (device), its KV connector's tiers (vLLM's `external_prefix_cache_*`: CPU offload, LMCache, Mooncake) or SGLang's HiCache host and storage tiers (each request's `cached_tokens_details`), with LMCache's and the Mooncake master's own figures where the agent scraped them.\n\n| scenario | round | device tokens | connector tokens | connector lookups | HiCache host / storage tokens | share of prompt tokens from behind the device | LMCache hit / requested tokens | LMCache retrieve mean s | Mooncake keys (peak) / evicted |\n|---|---|---|---|---|---|---|---|---|---|\n");
    let n = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    for (name, r, t) in rows {
        let share = t
            .beyond_device()
            .filter(|_| r.total_input_tokens > 0)
            .map(|x| x / r.total_input_tokens as f64);
        let lm = t.lmcache.as_ref();
        let mc = t.mooncake.as_ref();
        let q = t.requests.as_ref();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(name),
            r.round,
            n(t.device_tokens
                .or_else(|| q.map(|q| q.device_tokens as f64))),
            n(t.external_tokens),
            n(t.external_queried_tokens),
            q.map_or("-".to_owned(), |q| format!(
                "{} / {}",
                q.host_tokens,
                q.storage_tokens.map_or("-".to_owned(), |s| s.to_string())
            )),
            ratio(share),
            lm.map_or("-".to_owned(), |l| format!(
                "{} / {}",
                n(l.hit_tokens),
                n(l.requested_tokens)
            )),
            lm.and_then(|l| l.retrieve_time_mean_s)
                .map_or("-".to_owned(), |s| format!("{s:.4}")),
            mc.map_or("-".to_owned(), |m| format!(
                "{} / {}",
                n(m.keys_max),
                n(m.evicted_keys)
            )),
        );
    }
    out.push('\n');
}
