//! The perfect prefix cache: what a cache that was empty when a round began could have given
//! each prompt of the round, from the prompts themselves. One implementation for every
//! figure that needs it: the cold-start verdict ([`crate::isolation`]) and the hits a
//! perfect cache would have given.
//!
//! Prompts are rendered as their messages in order and cut into chunks of [`CHUNK`] bytes,
//! each hashed with every chunk before it (as engines hash KV blocks), so that finding a
//! prompt's shared prefix costs one pass over it, however many prompts came before. Two
//! questions are asked of the texts a round has sent ([`PrefixTracker`]):
//!
//! - **in the order sent** ([`PrefixTracker::send`], as the prompt is inserted): the
//!   longest prefix it shares with a prompt sent before it, or a prompt and its reply. Summed
//!   over a round this is the most a cold cache could have given all of its requests
//!   together, whatever order the engine really took them in: every shared block is
//!   computed once, by whichever request came first, and reused by the others. Requests
//!   that share a prefix and are in flight together cannot each excuse the other;
//! - **generously** ([`PrefixTracker::shared_bytes`] once the request ended): the longest
//!   prefix it shares with any other text of the round sent before it ended, an upper bound
//!   for one request on its own (an engine may serve a later request first).
//!
//! A third question needs the engine's view, token by token ([`TokenPrefixes`]): what a
//! **perfect cache** (unbounded, never evicting) would have held when a prompt was sent:
//! every prompt of the scenario's earlier rounds, and every prompt of this round whose
//! prefill was done (its first token had come back). A request racing another that shares
//! its prefix could not reuse it, so the figure is what the requests *as they were sent*
//! could have reused; the round's measured hits over it is the cache's efficiency.
//!
//! Each prompt also names its **prefix group**: the first request of the round whose prompt
//! began like it (the same first chunk). In a cold round some request of every group
//! computed the group's common start.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::record::RequestRecord;

/// Bytes per chunk: about 16 tokens of English, one KV block of most engines.
pub const CHUNK: usize = 64;

/// The chained hashes of every prompt (and prompt + reply) sent so far, each with the
/// number of texts that had it and the request whose text had it first.
#[derive(Debug, Default)]
pub struct PrefixTracker {
    seen: HashMap<u64, Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    count: u32,
    first: u32,
}

/// What a prompt shares, in the order sent, with the texts a tracker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Share {
    /// Bytes at its start (whole chunks) that a text sent before it began with.
    pub bytes: usize,
    /// The request whose text first had the prompt's first chunk: its prefix group (none
    /// when no text began like it, or the prompt is shorter than a chunk).
    pub group: Option<u32>,
}

/// A conversation's messages as one text, in order: what its prefix is a prefix of.
pub fn render(messages: &[(String, String)]) -> String {
    let mut s = String::new();
    for (role, content) in messages {
        s.push_str(role);
        s.push('\n');
        s.push_str(content);
        s.push('\n');
    }
    s
}

/// The chained hash of each whole chunk of `text`.
fn chunk_hashes(text: &str) -> impl Iterator<Item = u64> + '_ {
    let mut h = 0u64;
    text.as_bytes().chunks_exact(CHUNK).map(move |c| {
        let mut s = DefaultHasher::new();
        h.hash(&mut s);
        c.hash(&mut s);
        h = s.finish();
        h
    })
}

impl PrefixTracker {
    /// Bytes at the start of `text` (whole chunks) that at least `others` texts seen began
    /// with: 1 for a text not inserted itself, 2 for one that was (itself and another).
    pub fn shared_bytes(&self, text: &str, others: u32) -> usize {
        chunk_hashes(text)
            .take_while(|h| self.seen.get(h).is_some_and(|s| s.count >= others))
            .count()
            * CHUNK
    }

    /// Remembers `text` as sent by request `id`, in one pass: what it shared, in the order
    /// sent, with the texts inserted before it, and its prefix group (`id` itself when no
    /// text began like it).
    pub fn send(&mut self, text: &str, id: u32) -> Share {
        let mut share = Share::default();
        let mut sharing = true;
        for h in chunk_hashes(text) {
            let s = self.seen.entry(h).or_insert(Seen {
                count: 0,
                first: id,
            });
            sharing &= s.count > 0;
            if sharing {
                share.bytes += CHUNK;
            }
            share.group.get_or_insert(s.first);
            s.count += 1;
        }
        share
    }

    /// Remembers `text` as sent by request `id` (or as history the engine has processed).
    pub fn insert(&mut self, text: &str, id: u32) {
        for h in chunk_hashes(text) {
            self.seen
                .entry(h)
                .and_modify(|s| s.count += 1)
                .or_insert(Seen {
                    count: 1,
                    first: id,
                });
        }
    }
}

/// The longest start of `text` at most `bytes` long that ends on a character boundary.
pub fn head(text: &str, bytes: usize) -> &str {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Prefixes a [`TokenPrefixes`] holds at most (about 16 bytes each): a scenario whose
/// prompts add more distinct tokens than this gets no perfect-cache figure.
pub const PERFECT_MAX_TOKENS: usize = 8_000_000;

/// The chained hash of every prefix of `ids`: entry `i` covers tokens `0..=i`.
pub fn token_hashes(ids: &[u32]) -> Vec<u64> {
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    ids.iter()
        .map(|t| {
            // splitmix64 of the previous hash and the token: cheap, and well mixed.
            let mut z = (h ^ u64::from(*t)).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            h = z ^ (z >> 31);
            h
        })
        .collect()
}

/// A perfect prefix cache, token by token: the prefixes of every prompt it was given
/// ([`token_hashes`]). It never evicts; past [`PERFECT_MAX_TOKENS`] it stops taking
/// prompts and says so ([`TokenPrefixes::overflowed`]), as its figures would then be low.
#[derive(Debug, Default)]
pub struct TokenPrefixes {
    seen: HashSet<u64>,
    overflowed: bool,
}

impl TokenPrefixes {
    /// Leading tokens of the prompt with prefix hashes `hashes` that the cache holds.
    pub fn shared(&self, hashes: &[u64]) -> usize {
        hashes.iter().take_while(|h| self.seen.contains(h)).count()
    }

    /// Takes a prompt whose prefill is done.
    pub fn insert(&mut self, hashes: &[u64]) {
        if self.overflowed {
            return;
        }
        // A prompt's prefixes are held from its first one that is new: what it shares is
        // already there.
        let new = self.shared(hashes);
        if self.seen.len() + (hashes.len() - new) > PERFECT_MAX_TOKENS {
            self.overflowed = true;
            return;
        }
        self.seen.extend(&hashes[new..]);
    }

    /// It stopped taking prompts: its shares may be short of a perfect cache's.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Distinct prefixes held: the tokens a perfect cache had to compute.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// What a perfect cache gives a prompt of `prompt` tokens that shares `perfect_prefix`
/// tokens with it ([`RequestRecord::perfect_prefix_tokens`]) on an engine caching whole
/// blocks of `block` tokens: whole blocks of the shared prefix, and never the prompt's last
/// token (an engine computes at least one token to answer).
pub fn perfect_hit_tokens(perfect_prefix: u32, prompt: u32, block: u32) -> u32 {
    let block = block.max(1);
    perfect_prefix.min(prompt.saturating_sub(1)) / block * block
}

/// Tokens per KV block assumed where the engine does not say (vLLM's default on GPUs).
pub const DEFAULT_BLOCK_TOKENS: u32 = 16;

/// Tokens per KV block of an engine for the perfect cache: what it reports (vLLM's
/// `cache_config_info`, kvbench-sim's), else per engine kind: llama.cpp and SGLang reuse any
/// prefix, token by token; others [`DEFAULT_BLOCK_TOKENS`].
pub fn block_tokens(reported: Option<u32>, engine_kind: &str) -> u32 {
    match (reported, engine_kind) {
        (Some(b), _) if b > 0 => b,
        (_, "llamacpp" | "sglang") => 1,
        _ => DEFAULT_BLOCK_TOKENS,
    }
}

/// What the perfect cache needs of one request: its in-order share and its prompt's size
/// in both counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptShare {
    /// [`RequestRecord::cold_prefix_tokens`] (the client's count).
    pub cold_prefix_tokens: u32,
    /// The prompt in the engine's tokens where it said, else the client's.
    pub prompt_tokens: u32,
    pub prompt_tokens_client: u32,
}

impl PromptShare {
    /// `None` when the agent did not say what the prompt shared (warmups, older agents).
    pub fn of(r: &RequestRecord) -> Option<PromptShare> {
        Some(PromptShare {
            cold_prefix_tokens: r.cold_prefix_tokens?,
            prompt_tokens: r.input_tokens(),
            prompt_tokens_client: r.prompt_tokens_client,
        })
    }

    /// The most of the prompt, in the engine's tokens, that a cache which was empty when
    /// the round began could have given it in the order sent: the in-order shared prefix
    /// scaled to the engine's tokenizer by the ratio of the two prompt counts, with the chat
    /// template's tokens and the count's error allowed (2 % and 16 tokens), in whole blocks
    /// of `block` tokens (an engine caches whole blocks), at most the prompt.
    pub fn cold_hit_tokens(&self, block: u32) -> u32 {
        let shared = f64::from(self.cold_prefix_tokens);
        let prompt = f64::from(self.prompt_tokens);
        let scale = if self.prompt_tokens_client > 0 {
            (prompt / f64::from(self.prompt_tokens_client)).clamp(0.25, 4.0)
        } else {
            1.0
        };
        let block = f64::from(block.max(1));
        let estimate = shared * scale * 1.02 + 16.0;
        ((estimate / block).floor() * block).min(prompt) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msgs(m: &[(&str, &str)]) -> Vec<(String, String)> {
        m.iter()
            .map(|(r, c)| ((*r).to_owned(), (*c).to_owned()))
            .collect()
    }

    #[test]
    fn shared_system_prompts_and_history_count_nothing_else_does() {
        let system = "you are a careful assistant ".repeat(20);
        let mut t = PrefixTracker::default();
        let a = render(&msgs(&[
            ("system", &system),
            ("user", &"first question ".repeat(30)),
        ]));
        assert_eq!(t.shared_bytes(&a, 1), 0, "nothing sent yet");
        t.insert(&a, 1);
        assert_eq!(
            t.shared_bytes(&a, 2),
            0,
            "a text does not share with itself"
        );
        let b = render(&msgs(&[
            ("system", &system),
            ("user", &"other words ".repeat(30)),
        ]));
        let shared = t.shared_bytes(&b, 1);
        // Sent after `a` or while `a` waited: the same share, either way.
        t.insert(&b, 2);
        assert_eq!(t.shared_bytes(&a, 2), shared);
        assert_eq!(t.shared_bytes(&b, 2), shared);
        let system_len = "system\n".len() + system.len() + 1;
        assert!(
            shared <= system_len && shared + CHUNK > system_len,
            "{shared} vs {system_len}"
        );
        // A conversation's next turn shares its history: the prompt and the reply.
        let history = msgs(&[
            ("system", &system),
            ("user", &"first question ".repeat(30)),
            ("assistant", &"a long answer ".repeat(30)),
        ]);
        t.insert(&render(&history), 1);
        let mut next = history.clone();
        next.push(("user".into(), "and then?".into()));
        let next = render(&next);
        assert!(t.shared_bytes(&next, 1) + CHUNK > render(&history).len());
        // A prompt that differs in its first bytes shares nothing.
        assert_eq!(t.shared_bytes(&render(&msgs(&[("user", &system)])), 1), 0);
    }

    /// In the order sent: the first of two prompts on a document shares nothing and leads
    /// the group, the second shares the document and joins it; the first's share is not
    /// revised when the second arrives.
    #[test]
    fn in_the_order_sent_the_first_of_a_group_shares_nothing() {
        let doc = "the same long document ".repeat(20);
        let mut t = PrefixTracker::default();
        let a = t.send(&format!("{doc} first question"), 4);
        let b = t.send(&format!("{doc} second question"), 9);
        let other = t.send(&"another text entirely ".repeat(10), 11);
        assert_eq!(
            a,
            Share {
                bytes: 0,
                group: Some(4)
            }
        );
        assert_eq!(b.group, Some(4));
        assert!(b.bytes <= doc.len() && b.bytes + CHUNK > doc.len(), "{b:?}");
        assert_eq!(
            other,
            Share {
                bytes: 0,
                group: Some(11)
            }
        );
        assert_eq!(
            t.send("short", 12),
            Share::default(),
            "under a chunk: no group"
        );
    }

    /// The perfect cache holds what it was given, token by token: a prompt shares the
    /// prefix it has in common with one inserted, and nothing with one merely looked up.
    #[test]
    fn the_perfect_cache_shares_whole_prefixes_token_by_token() {
        let mut c = TokenPrefixes::default();
        let a = token_hashes(&[1, 2, 3, 4, 5]);
        let b = token_hashes(&[1, 2, 3, 9, 5]);
        assert_eq!(c.shared(&a), 0);
        c.insert(&a);
        assert_eq!(c.shared(&a), 5);
        assert_eq!(c.shared(&b), 3, "the prefix before the first difference");
        assert_eq!(c.shared(&token_hashes(&[2, 3])), 0, "not a prefix");
        c.insert(&b);
        assert_eq!(c.len(), 7, "shared prefixes are held once");
        assert!(!c.overflowed());
    }

    #[test]
    fn perfect_hits_are_whole_blocks_short_of_the_last_token() {
        assert_eq!(perfect_hit_tokens(100, 200, 16), 96);
        assert_eq!(
            perfect_hit_tokens(200, 200, 16),
            192,
            "199 tokens: 12 blocks"
        );
        assert_eq!(perfect_hit_tokens(200, 200, 1), 199);
        assert_eq!(perfect_hit_tokens(15, 200, 16), 0);
        assert_eq!(perfect_hit_tokens(5, 0, 0), 0);
    }

    #[test]
    fn head_cuts_on_character_boundaries() {
        assert_eq!(head("腾讯云", 4), "腾");
        assert_eq!(head("abc", 10), "abc");
    }

    proptest! {
        /// Against a cache holding some prompts, a prompt shares exactly the longest common
        /// prefix it has with one of them.
        #[test]
        fn a_prompt_shares_its_longest_common_prefix_with_those_held(
            held in proptest::collection::vec(proptest::collection::vec(0u32..4, 0..12), 0..6),
            probe in proptest::collection::vec(0u32..4, 0..12),
        ) {
            let mut c = TokenPrefixes::default();
            for p in &held {
                c.insert(&token_hashes(p));
            }
            let want = held
                .iter()
                .map(|p| p.iter().zip(&probe).take_while(|(a, b)| a == b).count())
                .max()
                .unwrap_or(0);
            prop_assert_eq!(c.shared(&token_hashes(&probe)), want);
        }

        #[test]
        fn a_text_shares_exactly_its_whole_chunks_with_itself(s in "[a-z ]{0,500}", extra in "[a-z]{1,50}") {
            let mut t = PrefixTracker::default();
            t.insert(&s, 0);
            let longer = format!("{s}{extra}");
            prop_assert_eq!(t.shared_bytes(&longer, 1), s.len() / CHUNK * CHUNK);
        }
    }
}
