//! `tokenizer: engine`: lengths in the engine's own tokens, for users with no
//! `tokenizer.json` (GGUF models). Before its first round, the agent asks the engine's
//! `/tokenize` (vLLM, SGLang, llama.cpp, kvbench-sim) how many tokens each piece of text the
//! generators write costs: every vocabulary word as it appears after a space and after a
//! line break, capitalized and with a full stop. Engines' tokenizers split text at spaces
//! before anything else (BPE pre-tokenization; SentencePiece's word boundary), so a text
//! costs the sum of its pieces; a piece outside the table (dataset text) is counted as one
//! token per word, as without a tokenizer.

use std::collections::HashMap;
use std::time::Duration;

use hyper::Method;
use kvbench_common::tokenizer::{count_tokens, TokenCounter, CODE_WORDS, WORDS};

use super::http::{EngineCallError, HttpClient};

/// Tokens per piece, as the engine counts them in context.
#[derive(Debug, Clone, Default)]
pub struct EngineTokens {
    /// `" word"` (after a space or at the start) and `"\nword"` (after a line break).
    cost: HashMap<String, usize>,
    /// Tokens per byte of a piece outside the table (measured on the cold-start nonce's
    /// shape, hexadecimal digits in brackets); 0: one token per piece.
    per_byte: f64,
}

/// A piece of the shape the cold-start generator opens its prompts with.
const NONCE: &str = " [0123456789abcdef]";

/// The pieces the generators write, each in its two contexts.
fn pieces() -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for w in WORDS {
        let mut cs = w.chars();
        let cap: String = cs
            .next()
            .map(|c| c.to_uppercase().chain(cs).collect())
            .unwrap_or_default();
        for v in [
            w.to_string(),
            format!("{w}."),
            cap.clone(),
            format!("{cap}."),
        ] {
            words.push(v);
        }
    }
    words.extend(CODE_WORDS.iter().map(|w| w.to_string()));
    words.sort();
    words.dedup();
    words
        .into_iter()
        .flat_map(|w| [format!(" {w}"), format!("\n{w}")])
        .collect()
}

/// Asks `/tokenize` for the tokens of `text` (no special tokens).
async fn tokenize(
    client: &HttpClient,
    url: &str,
    model: &str,
    text: &str,
) -> Result<usize, EngineCallError> {
    let body = serde_json::json!({
        // llama.cpp reads `content`, vLLM and SGLang `prompt`; each ignores the other.
        "content": text,
        "prompt": text,
        "model": model,
        "add_special": false,
        "add_special_tokens": false,
    })
    .to_string();
    let a = super::http::call(
        client,
        Method::POST,
        url,
        Some(&body),
        Duration::from_secs(10),
    )
    .await?;
    let body = a.success(&format!("POST {url}"))?;
    let call = || format!("POST {url}");
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| EngineCallError::answer(call(), format!("not JSON: {e}")))?;
    v.get("count")
        .and_then(serde_json::Value::as_u64)
        .map(|c| c as usize)
        .or_else(|| v.get("tokens").and_then(|t| t.as_array()).map(Vec::len))
        .ok_or_else(|| {
            EngineCallError::answer(
                call(),
                format!(
                    "no `tokens` in {}",
                    body.chars().take(200).collect::<String>()
                ),
            )
        })
}

impl EngineTokens {
    /// Measures every piece through the engine's `/tokenize` (a few thousand small calls,
    /// eight at a time; about a second on a laptop).
    pub async fn measure(
        client: &HttpClient,
        engine_url: &str,
        model: &str,
    ) -> Result<EngineTokens, EngineCallError> {
        let url = format!("{engine_url}/tokenize");
        // The cost of a piece: the tokens it adds after a fixed lead.
        let lead = "the";
        let base = tokenize(client, &url, model, lead).await?;
        let mut cost = HashMap::new();
        let all = pieces();
        for chunk in all.chunks(8) {
            let mut set = tokio::task::JoinSet::new();
            for p in chunk {
                let (client, url, model, p) =
                    (client.clone(), url.clone(), model.to_owned(), p.clone());
                set.spawn(async move {
                    let n = tokenize(&client, &url, &model, &format!("{lead}{p}")).await;
                    (p, n)
                });
            }
            while let Some(r) = set.join_next().await {
                let (p, n) = r.map_err(|e| {
                    EngineCallError::answer(format!("POST {url}"), format!("stopped: {e}"))
                })?;
                cost.insert(p, n?.saturating_sub(base));
            }
        }
        let nonce = tokenize(client, &url, model, &format!("{lead}{NONCE}")).await?;
        let per_byte = nonce.saturating_sub(base) as f64 / (NONCE.len() - 1) as f64;
        Ok(EngineTokens { cost, per_byte })
    }

    pub fn len(&self) -> usize {
        self.cost.len()
    }
}

impl TokenCounter for EngineTokens {
    fn count(&self, text: &str) -> usize {
        let mut total = 0;
        let mut after_break = false;
        let mut rest = text;
        loop {
            let end = rest.find([' ', '\n']).unwrap_or(rest.len());
            let word = &rest[..end];
            if !word.is_empty() {
                let key = format!("{}{word}", if after_break { '\n' } else { ' ' });
                total += self.cost.get(&key).copied().unwrap_or_else(|| {
                    if self.per_byte > 0.0 {
                        ((word.len() as f64 * self.per_byte).round() as usize).max(1)
                    } else {
                        count_tokens(word)
                    }
                });
            }
            let Some(sep) = rest[end..].chars().next() else {
                break;
            };
            after_break = sep == '\n';
            rest = &rest[end + 1..];
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_costs_the_sum_of_its_pieces_in_context() {
        let t = EngineTokens {
            cost: HashMap::from([
                (" The".to_owned(), 1),
                (" cache".to_owned(), 2),
                (" cold.".to_owned(), 3),
                ("\nfn".to_owned(), 4),
            ]),
            per_byte: 0.0,
        };
        assert_eq!(t.count("The cache cold."), 6);
        assert_eq!(t.count("The\nfn"), 5);
        // Unknown pieces: one token per word.
        assert_eq!(t.count("The unknown words"), 3);
        assert_eq!(t.count(""), 0);
        // With a measured rate, unknown pieces cost their bytes at that rate.
        let t = EngineTokens { per_byte: 0.5, ..t };
        assert_eq!(t.count("The [0123456789abcdef]"), 1 + 9);
    }

    #[test]
    fn every_generator_word_is_measured_in_both_contexts() {
        let p = pieces();
        assert!(p.contains(&" The.".to_owned()) && p.contains(&"\nfn".to_owned()));
        assert_eq!(p.len() % 2, 0);
    }
}
