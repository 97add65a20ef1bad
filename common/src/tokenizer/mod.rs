//! kvbench's tokenizer, shared by `kvbench-sim` and the workload generators.
//!
//! The rule is deliberately simple and documented, so that anyone can predict token counts:
//!
//! - a token is a maximal run of non-whitespace characters; whitespace separates tokens and
//!   is not itself a token (`"Hello,  world!"` is 2 tokens);
//! - a token's id is the 32-bit FNV-1a hash of its UTF-8 bytes.
//!
//! Chat requests are rendered with [`render_chat`] (a ChatML-like template) before
//! tokenizing, so that a conversation's history is a token prefix of its next turn.
//!
//! `hf`: a Hugging Face `tokenizer.json` as a [`TokenCounter`] ([`HfTokenizer`]), for
//! exact counts in an engine's own tokens.

mod hf;

pub use hf::{HfTokenizer, NotATokenizer};

/// Counts tokens the way some engine's tokenizer does. kvbench's own rule
/// ([`Whitespace`]) is the default; a Hugging Face `tokenizer.json` gives exact counts
/// ([`HfTokenizer`]).
pub trait TokenCounter: Send + Sync {
    fn count(&self, text: &str) -> usize;

    /// `text` as a sequence of token ids, for comparing prompts token by token: the
    /// tokenizer's own ids where it has them, else one id per whitespace-separated word
    /// (then only the share of two texts in common is meaningful, not the count).
    fn ids(&self, text: &str) -> Vec<u32> {
        tokenize(text)
    }

    /// True when a token is exactly a whitespace-separated word (generators then need no
    /// fitting).
    fn is_words(&self) -> bool {
        false
    }
}

impl std::fmt::Debug for dyn TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_words() {
            "whitespace tokens"
        } else {
            "tokenizer"
        })
    }
}

/// kvbench's documented rule: a token is a run of non-whitespace characters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Whitespace;

impl TokenCounter for Whitespace {
    fn count(&self, text: &str) -> usize {
        count_tokens(text)
    }

    fn is_words(&self) -> bool {
        true
    }
}

/// The id of one token.
pub fn token_id(token: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in token.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Token ids of `text`.
pub fn tokenize(text: &str) -> Vec<u32> {
    text.split_whitespace().map(token_id).collect()
}

/// Number of tokens in `text` (no allocation).
pub fn count_tokens(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Renders chat messages `(role, content)` into the prompt text the simulator tokenizes:
/// `<|im_start|> ROLE CONTENT <|im_end|>` per message, then `<|im_start|> assistant`.
pub fn render_chat<'a>(messages: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (role, content) in messages {
        out.push_str("<|im_start|> ");
        out.push_str(role);
        out.push(' ');
        out.push_str(content);
        out.push_str(" <|im_end|>\n");
    }
    out.push_str("<|im_start|> assistant");
    out
}

/// The prompt of a `/v1/completions` request for these messages: a lone user message is
/// sent as it is (a dataset's plain prompt); anything else through [`render_chat`].
pub fn completion_prompt(messages: &[(String, String)]) -> String {
    match messages {
        [(role, content)] if role == "user" => content.clone(),
        _ => render_chat(messages.iter().map(|(r, c)| (r.as_str(), c.as_str()))),
    }
}

/// Plain English words used to build text that reads like text (see `workload`).
pub const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "system",
    "cache",
    "memory",
    "request",
    "model",
    "server",
    "latency",
    "token",
    "network",
    "data",
    "cluster",
    "node",
    "storage",
    "transfer",
    "engine",
    "query",
    "result",
    "value",
    "report",
    "process",
    "service",
    "region",
    "window",
    "context",
    "document",
    "section",
    "policy",
    "market",
    "energy",
    "water",
    "river",
    "mountain",
    "city",
    "village",
    "harbor",
    "garden",
    "library",
    "history",
    "science",
    "theory",
    "method",
    "experiment",
    "signal",
    "pattern",
    "measure",
    "average",
    "balance",
    "capacity",
    "density",
    "pressure",
    "surface",
    "volume",
    "weather",
    "season",
    "morning",
    "evening",
    "journey",
    "travel",
    "market",
    "trade",
    "price",
    "budget",
    "contract",
    "partner",
    "customer",
    "product",
    "design",
    "quality",
    "record",
    "archive",
    "letter",
    "chapter",
    "article",
    "journal",
    "author",
    "reader",
    "teacher",
    "student",
    "lesson",
    "question",
    "answer",
    "problem",
    "solution",
    "reason",
    "example",
    "detail",
    "summary",
    "outline",
    "version",
    "update",
    "change",
    "growth",
    "decline",
    "increase",
    "reduce",
    "improve",
    "compare",
    "explain",
    "describe",
    "consider",
    "suggest",
    "provide",
    "support",
    "require",
    "include",
    "contain",
    "follow",
    "remain",
    "become",
    "appear",
    "develop",
    "produce",
    "deliver",
    "receive",
    "collect",
    "observe",
    "green",
    "bright",
    "quiet",
    "rapid",
    "steady",
    "careful",
    "simple",
    "complex",
    "early",
    "late",
    "large",
    "small",
    "strong",
    "gentle",
    "modern",
    "ancient",
    "public",
    "private",
    "local",
    "global",
    "central",
    "northern",
    "southern",
    "eastern",
    "western",
    "common",
    "rare",
    "useful",
    "certain",
    "likely",
    "recent",
    "several",
    "many",
    "few",
    "each",
    "every",
    "between",
    "within",
    "across",
    "through",
    "during",
    "before",
    "after",
    "under",
    "above",
    "around",
    "toward",
    "against",
    "without",
    "because",
    "although",
    "while",
];

/// Words that look like source code, for the `code_generation` workload.
pub const CODE_WORDS: &[&str] = &[
    "fn",
    "let",
    "mut",
    "pub",
    "struct",
    "impl",
    "return",
    "if",
    "else",
    "match",
    "for",
    "while",
    "loop",
    "self",
    "Self",
    "Option<T>",
    "Result<T,",
    "E>",
    "Vec<u8>",
    "String",
    "&str",
    "u32",
    "u64",
    "usize",
    "bool",
    "true",
    "false",
    "None",
    "Some(x)",
    "Ok(())",
    "Err(e)",
    "=>",
    "->",
    "::",
    "{",
    "}",
    "(",
    ");",
    "=",
    "==",
    "!=",
    "+=",
    "<",
    ">",
    "&&",
    "||",
    "config",
    "buffer",
    "index",
    "count",
    "offset",
    "len",
    "key",
    "value",
    "map",
    "cache",
    "entry",
    "node",
    "parent",
    "child",
    "state",
    "error",
    "handle",
    "request",
    "response",
    "stream",
    "reader",
    "writer",
    "parse",
    "encode",
    "decode",
    "insert",
    "remove",
    "get",
    "push",
    "pop",
    "iter()",
    "clone()",
    "unwrap_or(0)",
    "as_ref()",
    "into()",
    "#[derive(Debug)]",
    "//",
    "assert_eq!",
    "println!",
    "async",
    "await",
    "tokio::spawn",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_separates_tokens() {
        assert_eq!(count_tokens("Hello,  world!\n\tok"), 3);
        assert_eq!(
            tokenize("a b a"),
            vec![token_id("a"), token_id("b"), token_id("a")]
        );
        assert_eq!(count_tokens(""), 0);
    }

    #[test]
    fn chat_history_is_a_token_prefix_of_the_next_turn() {
        let t1 = render_chat([("system", "be brief"), ("user", "hi there")]);
        let t2 = render_chat([
            ("system", "be brief"),
            ("user", "hi there"),
            ("assistant", "hello"),
            ("user", "more"),
        ]);
        let a = tokenize(&t1);
        let b = tokenize(&t2);
        // Everything but the trailing generation prompt is shared.
        let shared = a.len() - 2;
        assert_eq!(a[..shared], b[..shared]);
    }
}
