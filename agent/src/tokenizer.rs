//! The cache of the tokenizer rounds bring (the tokenizer itself is
//! [`kvbench_common::tokenizer::HfTokenizer`]).

use std::sync::{Arc, Mutex};

use kvbench_common::tokenizer::{HfTokenizer, NotATokenizer};

/// The last tokenizer a round brought, so that rounds reusing it parse it once.
#[derive(Debug, Default)]
pub struct TokenizerCache(Mutex<Option<(u64, Arc<HfTokenizer>)>>);

impl TokenizerCache {
    pub fn get(&self, bytes: &[u8]) -> Result<Arc<HfTokenizer>, NotATokenizer> {
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
