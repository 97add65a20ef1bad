//! One request as the agent saw it: the unit every statistic is computed from.

use serde::{Deserialize, Serialize};

/// How a request ended. Exactly one per request; the labels are stable keys in result files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    ConnectError,
    #[serde(rename = "http_4xx")]
    Http4xx,
    #[serde(rename = "http_429")]
    Http429,
    #[serde(rename = "http_5xx")]
    Http5xx,
    TtftTimeout,
    IdleTimeout,
    StreamTruncated,
    MalformedSse,
    MalformedJson,
    Reset,
    Cancelled,
}

impl Outcome {
    pub const ALL: [Outcome; 12] = [
        Outcome::Ok,
        Outcome::ConnectError,
        Outcome::Http4xx,
        Outcome::Http429,
        Outcome::Http5xx,
        Outcome::TtftTimeout,
        Outcome::IdleTimeout,
        Outcome::StreamTruncated,
        Outcome::MalformedSse,
        Outcome::MalformedJson,
        Outcome::Reset,
        Outcome::Cancelled,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ConnectError => "connect_error",
            Outcome::Http4xx => "http_4xx",
            Outcome::Http429 => "http_429",
            Outcome::Http5xx => "http_5xx",
            Outcome::TtftTimeout => "ttft_timeout",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::StreamTruncated => "stream_truncated",
            Outcome::MalformedSse => "malformed_sse",
            Outcome::MalformedJson => "malformed_json",
            Outcome::Reset => "reset",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// The class of an HTTP status that is not a success.
    pub fn from_http_status(status: u16) -> Outcome {
        match status {
            429 => Outcome::Http429,
            400..=499 => Outcome::Http4xx,
            _ => Outcome::Http5xx,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One request. Times are milliseconds on the agent's monotonic clock, relative to the
/// round's start; `chunk_offsets_ms` are relative to `sent_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub scenario: String,
    pub round: u32,
    pub agent: String,
    pub request_id: u32,
    pub conversation_id: u32,
    pub turn: u32,
    /// A warmup request: sent before the measured ones, excluded from statistics.
    #[serde(default)]
    pub warmup: bool,
    /// When the load shape meant the request to go out.
    pub scheduled_ms: f64,
    /// Time spent waiting for a concurrency slot (open loop with `max_concurrency`).
    #[serde(default)]
    pub queue_ms: f64,
    /// When it actually went out.
    pub sent_ms: f64,
    pub first_byte_ms: Option<f64>,
    pub first_token_ms: Option<f64>,
    pub chunk_offsets_ms: Vec<f64>,
    pub end_ms: f64,
    /// Prompt tokens counted by kvbench's tokenizer over the message contents.
    pub prompt_tokens_client: u32,
    /// `usage.prompt_tokens` as the engine reported it.
    pub prompt_tokens: Option<u32>,
    /// `usage.completion_tokens` as the engine reported it.
    pub output_tokens: Option<u32>,
    /// Content chunks received.
    pub output_chunks: u32,
    /// `usage.prompt_tokens_details.cached_tokens` as the engine reported it.
    pub cached_tokens: Option<u32>,
    pub finish_reason: String,
    /// Server-side TTFT when the engine reports one (kvbench-sim's `kvbench_server_ttft_us`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_ttft_ms: Option<f64>,
    /// No earlier request of the round began like this one: after a true cold start, none
    /// of its prefix can be cached.
    #[serde(default)]
    pub first_touch: bool,
    /// Tokens (the client's estimate) of the longest prefix this prompt shares with a
    /// prompt, or a prompt and its reply, sent before it in the same round: as much as an
    /// engine that was cold when the round began may have cached of it. Null for warmups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_prefix_tokens: Option<u32>,
    /// Tokens (the client's estimate) of the longest prefix this prompt shares with a
    /// prompt, or a prompt and its reply, sent before it in the round, in the order sent:
    /// what a cache that was empty when the round began could have given it, summed over
    /// the round the most it could have given them all (see [`crate::prefix_cache`]). Null
    /// for warmups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_prefix_tokens: Option<u32>,
    /// The first request of the round whose prompt began like this one (itself when none
    /// did): its prefix group. Null for warmups and prompts shorter than 64 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_group: Option<u32>,
    /// Tokens (the engine's count) of the longest prefix this prompt shares with the prompts
    /// a perfect prefix cache held when it was sent: every prompt of the scenario's earlier
    /// rounds (warmups included) and every prompt of this round whose first token had come
    /// back before it went out (its prefill done). The agent counts the prompt as its
    /// engine renders it, in its tokenizer's tokens, scaled to the engine's prompt count.
    /// Null for warmups (see [`crate::prefix_cache::perfect_hit_tokens`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perfect_prefix_tokens: Option<u32>,
    /// The cached tokens by the tier that gave them, where the engine says so per request
    /// (SGLang's `cached_tokens_details`, asked with `return_cached_tokens_details`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens_details: Option<CachedTokensDetails>,
    /// Its event's sequence number in the round's stream (from 1; none where the agent
    /// numbered none): a resumed stream starts after the last one held, and a resumed run
    /// fetches an interrupted round's records after the last one written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The first attempt died on a reused connection before any byte of its answer (a
    /// server that closed an idle keep-alive connection) and was sent again on a fresh one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retried: bool,
    pub outcome: Outcome,
    pub error: String,
    pub http_status: Option<u16>,
}

/// One request's cached tokens by tier, as SGLang's HiCache reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedTokensDetails {
    /// From the device (GPU) cache.
    pub device: u32,
    /// Loaded from the host (CPU memory) tier.
    pub host: u32,
    /// Loaded from the storage tier (L3), where one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<u32>,
}

impl RequestRecord {
    /// Moves the record's clock: its times become relative to `zero_ms` of its old clock
    /// (a split scenario's agents, each on its own clock, onto their common start).
    pub fn rebase(&mut self, zero_ms: f64) {
        self.scheduled_ms -= zero_ms;
        self.sent_ms -= zero_ms;
        self.end_ms -= zero_ms;
        for t in [&mut self.first_byte_ms, &mut self.first_token_ms]
            .into_iter()
            .flatten()
        {
            *t -= zero_ms;
        }
    }

    /// Time to first token: send -> first chunk with non-empty content.
    pub fn ttft_ms(&self) -> Option<f64> {
        self.first_token_ms.map(|t| t - self.sent_ms)
    }

    /// End-to-end latency: send -> last byte.
    pub fn e2el_ms(&self) -> f64 {
        self.end_ms - self.sent_ms
    }

    /// Prompt tokens: the engine's count when it gave one, else kvbench's.
    pub fn input_tokens(&self) -> u32 {
        self.prompt_tokens.unwrap_or(self.prompt_tokens_client)
    }

    /// Output tokens: the engine's count when it gave one, else the content chunks.
    pub fn generated_tokens(&self) -> u32 {
        self.output_tokens.unwrap_or(self.output_chunks)
    }

    /// Time per output token after the first: (e2el - ttft) / (output_tokens - 1).
    pub fn tpot_ms(&self) -> Option<f64> {
        let out = self.generated_tokens();
        let ttft = self.ttft_ms()?;
        (out > 1).then(|| (self.e2el_ms() - ttft) / f64::from(out - 1))
    }

    /// Gaps between consecutive content chunks.
    pub fn itls_ms(&self) -> impl Iterator<Item = f64> + '_ {
        self.chunk_offsets_ms.windows(2).map(|w| w[1] - w[0])
    }
}

#[cfg(test)]
impl RequestRecord {
    /// A completed request for unit tests: request `id` of round 1 on agent `a`, sent at
    /// `sent`, first token `ttft` later, ended at `end` (ms); 100 prompt tokens, 80 of them
    /// cached; two output tokens in two chunks, at the first token and at the end.
    pub(crate) fn for_test(id: u32, sent: f64, ttft: f64, end: f64) -> RequestRecord {
        RequestRecord {
            seq: None,
            scenario: "s".into(),
            round: 1,
            agent: "a".into(),
            request_id: id,
            conversation_id: id,
            turn: 0,
            warmup: false,
            scheduled_ms: sent,
            queue_ms: 0.0,
            sent_ms: sent,
            first_byte_ms: Some(sent + ttft),
            first_token_ms: Some(sent + ttft),
            chunk_offsets_ms: vec![ttft, end - sent],
            end_ms: end,
            prompt_tokens_client: 100,
            prompt_tokens: Some(100),
            output_tokens: Some(2),
            output_chunks: 2,
            cached_tokens: Some(80),
            finish_reason: "length".into(),
            engine_ttft_ms: None,
            first_touch: false,
            shared_prefix_tokens: None,
            cold_prefix_tokens: None,
            prefix_group: None,
            perfect_prefix_tokens: None,
            cached_tokens_details: None,
            retried: false,
            outcome: Outcome::Ok,
            error: String::new(),
            http_status: Some(200),
        }
    }
}
