//! Hugging Face tokenizers (`tokenizer.json`) as token counters, cached by content.

use std::sync::{Arc, Mutex};

use kvbench_common::tokenizer::{count_tokens, TokenCounter};

/// A `tokenizer.json` loaded with the `tokenizers` crate.
pub struct HfTokenizer(tokenizers::Tokenizer);

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HfTokenizer")
    }
}

impl HfTokenizer {
    /// Parses a `tokenizer.json`'s bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<HfTokenizer, String> {
        tokenizers::Tokenizer::from_bytes(bytes)
            .map(HfTokenizer)
            .map_err(|e| format!("not a usable tokenizer.json: {e}"))
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
}

/// The last tokenizer a round brought, so that rounds reusing it parse it once.
#[derive(Debug, Default)]
pub struct TokenizerCache(Mutex<Option<(u64, Arc<HfTokenizer>)>>);

impl TokenizerCache {
    pub fn get(&self, bytes: &[u8]) -> Result<Arc<HfTokenizer>, String> {
        let key = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, t)) = g.as_ref() {
            if *k == key {
                return Ok(t.clone());
            }
        }
        let t = Arc::new(HfTokenizer::from_bytes(bytes)?);
        *g = Some((key, t.clone()));
        Ok(t)
    }
}
