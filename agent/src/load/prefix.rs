//! What an engine that was cold when a round began may legitimately have cached of a
//! prompt: the longest prefix it shares with another prompt (or a prompt and its reply)
//! of the round sent before it ended. That includes prompts sent after it while it waited:
//! an engine may serve a later request first (one slot, two conversations) and the earlier
//! one then reuses what they share. Prompts are rendered as their messages in order and cut
//! into chunks of [`CHUNK`] bytes, each hashed with every chunk before it (as engines hash
//! KV blocks), so that finding a prompt's shared prefix costs one pass over it, however
//! many prompts came before.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// Bytes per chunk: about 16 tokens of English, one KV block of most engines.
pub const CHUNK: usize = 64;

/// The chained hashes of every prompt (and prompt + reply) sent so far, each with the
/// number of texts that had it.
#[derive(Debug, Default)]
pub struct PrefixTracker {
    seen: HashMap<u64, u32>,
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
            .take_while(|h| self.seen.get(h).is_some_and(|n| *n >= others))
            .count()
            * CHUNK
    }

    /// Remembers `text` as sent (or as history the engine has processed).
    pub fn insert(&mut self, text: &str) {
        for h in chunk_hashes(text) {
            *self.seen.entry(h).or_insert(0) += 1;
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
        t.insert(&a);
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
        t.insert(&b);
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
        t.insert(&render(&history));
        let mut next = history.clone();
        next.push(("user".into(), "and then?".into()));
        let next = render(&next);
        assert!(t.shared_bytes(&next, 1) + CHUNK > render(&history).len());
        // A prompt that differs in its first bytes shares nothing.
        assert_eq!(t.shared_bytes(&render(&msgs(&[("user", &system)])), 1), 0);
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
            t.insert(&s);
            let longer = format!("{s}{extra}");
            prop_assert_eq!(t.shared_bytes(&longer, 1), s.len() / CHUNK * CHUNK);
        }
    }
}
