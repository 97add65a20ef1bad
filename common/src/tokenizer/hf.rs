//! Hugging Face tokenizers (`tokenizer.json`) as token counters: the agent counts a
//! round's prompts with the one it brings, the coordinator checks and inspects with it.

use super::{count_tokens, TokenCounter};

/// A `tokenizer.json` that the `tokenizers` crate cannot load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a usable tokenizer.json: {0}")]
pub struct NotATokenizer(pub String);

/// A `tokenizer.json` loaded with the `tokenizers` crate.
pub struct HfTokenizer(tokenizers::Tokenizer);

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HfTokenizer")
    }
}

impl HfTokenizer {
    /// Parses a `tokenizer.json`'s bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<HfTokenizer, NotATokenizer> {
        tokenizers::Tokenizer::from_bytes(bytes)
            .map(HfTokenizer)
            .map_err(|e| NotATokenizer(e.to_string()))
    }
}

impl HfTokenizer {
    /// The token ids of `text` (no special tokens added; special tokens written in the text
    /// are matched); `None` when the tokenizer cannot encode it.
    pub fn ids(&self, text: &str) -> Option<Vec<u32>> {
        self.0
            .encode(text, false)
            .ok()
            .map(|e| e.get_ids().to_vec())
    }
}

impl TokenCounter for HfTokenizer {
    fn count(&self, text: &str) -> usize {
        // Encoding without special tokens: the prompt's own tokens. A text the tokenizer
        // cannot encode falls back to kvbench's count rather than failing the round.
        self.0
            .encode(text, false)
            .map(|e| e.len())
            .unwrap_or_else(|_| count_tokens(text))
    }

    fn ids(&self, text: &str) -> Vec<u32> {
        HfTokenizer::ids(self, text).unwrap_or_else(|| super::tokenize(text))
    }
}
