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
//! Each prompt also names its **prefix group**: the first request of the round whose prompt
//! began like it (the same first chunk). In a cold round some request of every group
//! computed the group's common start.

use std::collections::HashMap;
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

    #[test]
    fn head_cuts_on_character_boundaries() {
        assert_eq!(head("腾讯云", 4), "腾");
        assert_eq!(head("abc", 10), "abc");
    }

    proptest! {
        #[test]
        fn a_text_shares_exactly_its_whole_chunks_with_itself(s in "[a-z ]{0,500}", extra in "[a-z]{1,50}") {
            let mut t = PrefixTracker::default();
            t.insert(&s, 0);
            let longer = format!("{s}{extra}");
            prop_assert_eq!(t.shared_bytes(&longer, 1), s.len() / CHUNK * CHUNK);
        }
    }
}
