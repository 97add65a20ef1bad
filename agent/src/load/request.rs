//! One request against an OpenAI-compatible engine: send, stamp every byte's arrival
//! before parsing it, classify the outcome.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use kvbench_common::plan::ApiFlavor;
use kvbench_common::record::{CachedTokensDetails, Outcome};
use kvbench_common::tokenizer::completion_prompt;
#[cfg(test)]
use kvbench_common::tokenizer::render_chat;
use std::borrow::Cow;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::sse::SseParser;
use crate::engine::http::{
    died_before_answer, error_chain, fresh_client, EngineCallError, HttpClient,
};

/// What to send.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub base_url: &'a str,
    pub api: ApiFlavor,
    pub model: &'a str,
    /// `(role, content)` pairs.
    pub messages: &'a [(String, String)],
    pub max_tokens: u32,
    /// Also send `min_tokens = max_tokens` and `ignore_eos` (vLLM, SGLang).
    pub enforce_output_length: bool,
    pub ttft_timeout: Duration,
    pub idle_timeout: Duration,
    /// Called once, when the first token comes back: the prompt's prefill is done.
    pub on_first_token: Option<OnFirstToken<'a>>,
    /// Ask for the cached tokens by tier (SGLang's `return_cached_tokens_details`).
    pub cache_details: bool,
}

/// What a call does when its first token comes back.
#[derive(Clone, Copy)]
pub struct OnFirstToken<'a>(pub &'a (dyn Fn() + Send + Sync));

impl std::fmt::Debug for OnFirstToken<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnFirstToken")
    }
}

/// What came back, with times as instants; the caller makes them round-relative.
#[derive(Debug, Clone)]
pub struct Reply {
    pub sent: Instant,
    pub first_byte: Option<Instant>,
    pub first_token: Option<Instant>,
    pub chunks: Vec<Instant>,
    pub end: Instant,
    pub prompt_tokens: Option<u32>,
    pub output_tokens: Option<u32>,
    pub cached_tokens: Option<u32>,
    /// The cached tokens by tier, where the engine said (SGLang's `sglext`).
    pub cached_tokens_details: Option<CachedTokensDetails>,
    pub finish_reason: String,
    pub outcome: Outcome,
    pub error: String,
    pub http_status: Option<u16>,
    /// The generated text (content chunks concatenated).
    pub text: String,
    /// Server-side TTFT in microseconds, when the engine reports one.
    pub engine_ttft_us: Option<u64>,
    /// The first attempt died on a reused connection before any byte of its answer, and
    /// the request was sent again on a fresh connection.
    pub retried: bool,
}

fn body_json(call: &Call<'_>) -> Value {
    let mut v = json!({
        "model": call.model,
        "max_tokens": call.max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if call.enforce_output_length {
        v["min_tokens"] = json!(call.max_tokens);
        v["ignore_eos"] = json!(true);
    }
    if call.cache_details {
        v["return_cached_tokens_details"] = json!(true);
    }
    match call.api {
        ApiFlavor::Chat => {
            let msgs: Vec<Value> = call
                .messages
                .iter()
                .map(|(r, c)| json!({"role": r, "content": c}))
                .collect();
            v["messages"] = Value::Array(msgs);
        }
        ApiFlavor::Completions => {
            let prompt = completion_prompt(call.messages);
            v["prompt"] = Value::String(prompt);
        }
    }
    v
}

/// Sends one streaming request and reads it to the end (or to its first failure). A
/// request whose pooled connection died before any byte of the answer is sent once more on
/// a fresh connection (its TTFT still counts from the first send); any other failure is
/// recorded as it is, never retried.
pub async fn send(client: &HttpClient, call: &Call<'_>) -> Reply {
    let mut reply = Reply::new();
    let req = match request(call) {
        Ok(r) => r,
        Err(e) => return fail(reply, Outcome::ConnectError, e.to_string()),
    };
    reply.sent = Instant::now();
    let ttft_deadline = reply.sent + call.ttft_timeout;
    let mut attempt = tokio::time::timeout_at(ttft_deadline, client.request(req)).await;
    if let Ok(Err(e)) = &attempt {
        if died_before_answer(e) {
            if let Ok(again) = request(call) {
                reply.retried = true;
                attempt =
                    tokio::time::timeout_at(ttft_deadline, fresh_client().request(again)).await;
            }
        }
    }
    let resp = match attempt {
        Err(_) => {
            return fail(
                reply,
                Outcome::TtftTimeout,
                "no response headers before the TTFT timeout".into(),
            )
        }
        Ok(Err(e)) => {
            let outcome = if e.is_connect() {
                Outcome::ConnectError
            } else {
                Outcome::Reset
            };
            return fail(reply, outcome, error_chain(&e));
        }
        Ok(Ok(r)) => r,
    };
    reply.first_byte = Some(Instant::now());
    let status = resp.status();
    reply.http_status = Some(status.as_u16());
    let body = resp.into_body();
    if !status.is_success() {
        let text = tokio::time::timeout(call.idle_timeout, body.collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| one_line(&String::from_utf8_lossy(&b.to_bytes())))
            .unwrap_or_default();
        return fail(
            reply,
            Outcome::from_http_status(status.as_u16()),
            format!("HTTP {status}: {text}"),
        );
    }
    read_stream(reply, body, call, ttft_deadline).await
}

/// The request of a call: POST to the API's path with the JSON body.
fn request(call: &Call<'_>) -> Result<Request<Full<Bytes>>, EngineCallError> {
    let path = match call.api {
        ApiFlavor::Chat => "/v1/chat/completions",
        ApiFlavor::Completions => "/v1/completions",
    };
    let url = format!("{}{}", call.base_url, path);
    let bad = |detail: String| EngineCallError::Request {
        call: format!("POST {url}"),
        detail,
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| bad(format!("bad engine URL: {e}")))?;
    Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(Full::new(Bytes::from(body_json(call).to_string())))
        .map_err(|e| bad(format!("cannot build request: {e}")))
}

/// Reads an SSE stream to `data: [DONE]`, stamping each frame as it arrives (before
/// parsing it), within the TTFT deadline and then the idle timeout.
async fn read_stream(
    mut reply: Reply,
    mut body: hyper::body::Incoming,
    call: &Call<'_>,
    ttft_deadline: Instant,
) -> Reply {
    let mut parser = SseParser::new();
    let mut done = false;
    let mut last_frame = Instant::now();
    loop {
        let deadline = if reply.first_token.is_none() {
            ttft_deadline
        } else {
            last_frame + call.idle_timeout
        };
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                let (o, what) = if reply.first_token.is_none() {
                    (Outcome::TtftTimeout, "no token before the TTFT timeout")
                } else {
                    (Outcome::IdleTimeout, "no bytes within the idle timeout")
                };
                return fail(reply, o, what.into());
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return fail(reply, Outcome::Reset, error_chain(&e)),
            Ok(Some(Ok(f))) => f,
        };
        // Stamp first, parse later.
        let now = Instant::now();
        last_frame = now;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let mut bad_json: Option<String> = None;
        let had_token = reply.first_token.is_some();
        let fed = parser.feed(data, |event| {
            if done || bad_json.is_some() {
                return;
            }
            if event.trim() == "[DONE]" {
                done = true;
                return;
            }
            match parse_event(event) {
                Ok(Some(c)) => absorb(&mut reply, &c, now),
                Ok(None) => {}
                Err(e) => {
                    bad_json = Some(format!(
                        "{e}: {}",
                        event.chars().take(200).collect::<String>()
                    ))
                }
            }
        });
        if !had_token && reply.first_token.is_some() {
            if let Some(OnFirstToken(f)) = call.on_first_token {
                f();
            }
        }
        if let Err(e) = fed {
            return fail(reply, Outcome::MalformedSse, e.to_string());
        }
        if let Some(e) = bad_json {
            return fail(reply, Outcome::MalformedJson, e);
        }
        if done {
            break;
        }
    }
    reply.end = Instant::now();
    if !done {
        return fail(
            reply,
            Outcome::StreamTruncated,
            "stream ended before data: [DONE]".into(),
        );
    }
    // Read the body to its end (the chunked terminator follows [DONE]) so that the
    // connection goes back to the pool for the next request instead of being closed.
    let _ = tokio::time::timeout(Duration::from_millis(250), async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
    reply
}

/// Opens up to `n` connections to the engine ahead of a round (concurrent `GET /health`),
/// so that the round's first requests do not pay for connection setup. Returns how many
/// answered.
pub async fn prewarm(client: &HttpClient, base_url: &str, n: usize) -> usize {
    let uri = format!("{base_url}/health");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, uri) = (client.clone(), uri.clone());
        set.spawn(async move {
            crate::engine::http::call(&client, Method::GET, &uri, None, Duration::from_secs(10))
                .await
                .ok()
                .map(|_| ())
        });
    }
    let mut ok = 0;
    while let Some(r) = set.join_next().await {
        if matches!(r, Ok(Some(()))) {
            ok += 1;
        }
    }
    ok
}

impl Reply {
    /// A reply to a request not sent yet: no times, no counts, outcome `ok` until told.
    pub fn new() -> Reply {
        Reply {
            sent: Instant::now(),
            first_byte: None,
            first_token: None,
            chunks: Vec::new(),
            end: Instant::now(),
            prompt_tokens: None,
            output_tokens: None,
            cached_tokens: None,
            cached_tokens_details: None,
            finish_reason: String::new(),
            outcome: Outcome::Ok,
            error: String::new(),
            http_status: None,
            text: String::new(),
            engine_ttft_us: None,
            retried: false,
        }
    }
}

impl Reply {
    /// A request the run stopped while it was in flight (sent at `sent`).
    pub fn cancelled(sent: Instant) -> Reply {
        fail(
            Reply {
                sent,
                ..Reply::new()
            },
            Outcome::Cancelled,
            "the run was stopped while the request was in flight".into(),
        )
    }
}

impl Default for Reply {
    fn default() -> Self {
        Self::new()
    }
}

/// One streamed event, read without building a JSON tree (strings borrowed unless escaped).
#[derive(serde::Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    kvbench_server_ttft_us: Option<u64>,
    /// SGLang's extension object, read apart so that a shape kvbench does not know there
    /// costs nothing else of the event.
    #[serde(default)]
    sglext: Option<Value>,
}

/// SGLang's cached tokens by tier (`sglext.cached_tokens_details`): none unless `device`
/// and `host` are counts (and `storage`, when given).
fn tier_details(ext: &Value) -> Option<CachedTokensDetails> {
    let d = ext.get("cached_tokens_details")?;
    let count = |k: &str| -> Option<Option<u32>> {
        match d.get(k) {
            None | Some(Value::Null) => Some(None),
            Some(v) => v.as_u64().map(|n| Some(n.min(u64::from(u32::MAX)) as u32)),
        }
    };
    Some(CachedTokensDetails {
        device: count("device")??,
        host: count("host")??,
        storage: count("storage")?,
    })
}

#[derive(serde::Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<UsageDetails>,
}

#[derive(serde::Deserialize)]
struct UsageDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// Parses one event's data: `Err` only when it is not JSON at all. JSON of another shape
/// (an error object, a keep-alive) carries nothing kvbench reads and is skipped.
fn nonempty<'s>(s: &'s Option<Cow<'_, str>>) -> Option<&'s str> {
    s.as_deref().filter(|s| !s.is_empty())
}

fn parse_event(data: &str) -> Result<Option<Chunk<'_>>, serde_json::Error> {
    match serde_json::from_str::<Chunk<'_>>(data) {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.is_data() => serde_json::from_str::<serde::de::IgnoredAny>(data).map(|_| None),
        Err(e) => Err(e),
    }
}

/// Takes what one event says: content, finish reason, usage.
fn absorb(reply: &mut Reply, c: &Chunk<'_>, at: Instant) {
    if let Some(us) = c.kvbench_server_ttft_us {
        reply.engine_ttft_us = Some(us);
    }
    if let Some(choice) = c.choices.as_ref().and_then(|c| c.first()) {
        let content = choice
            .delta
            .as_ref()
            .and_then(|d| {
                nonempty(&d.content)
                    .or(nonempty(&d.reasoning_content))
                    .or(nonempty(&d.reasoning))
            })
            .or(nonempty(&choice.text));
        if let Some(content) = content {
            if reply.first_token.is_none() {
                reply.first_token = Some(at);
            }
            reply.chunks.push(at);
            reply.text.push_str(content);
        }
        if let Some(f) = &choice.finish_reason {
            reply.finish_reason = f.to_string();
        }
    }
    if let Some(d) = c.sglext.as_ref().and_then(tier_details) {
        reply.cached_tokens_details = Some(d);
    }
    if let Some(u) = &c.usage {
        let clamp = |n: Option<u64>| n.map(|n| n.min(u64::from(u32::MAX)) as u32);
        reply.prompt_tokens = clamp(u.prompt_tokens).or(reply.prompt_tokens);
        reply.output_tokens = clamp(u.completion_tokens).or(reply.output_tokens);
        reply.cached_tokens = clamp(
            u.prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
        )
        .or(reply.cached_tokens);
    }
}

/// An error body as one short line: HTML tags dropped, whitespace collapsed, at most 200
/// characters (a 501 page must not fill the console).
pub fn one_line(body: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            _ if in_tag => {}
            c => text.push(c),
        }
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let joined = words.join(" ");
    if joined.chars().count() > 200 {
        format!("{}...", joined.chars().take(200).collect::<String>())
    } else {
        joined
    }
}

fn fail(mut reply: Reply, outcome: Outcome, error: String) -> Reply {
    reply.end = Instant::now();
    reply.outcome = outcome;
    reply.error = error;
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_page_is_one_short_line() {
        let html = "<!DOCTYPE html>\n<html><head><title>501 Not Implemented</title></head>\n<body>\n<h1>Not Implemented</h1>\n<p>no route</p>\n</body></html>\n";
        assert_eq!(
            one_line(html),
            "501 Not Implemented Not Implemented no route"
        );
        let long = "x ".repeat(500);
        let l = one_line(&long);
        assert!(l.len() <= 203 && l.ends_with("..."), "{l}");
        assert!(!one_line("a\nb\n\nc").contains('\n'));
    }

    fn call_of(api: ApiFlavor, messages: &[(String, String)]) -> Call<'_> {
        Call {
            base_url: "http://x",
            api,
            model: "m",
            messages,
            max_tokens: 37,
            enforce_output_length: false,
            ttft_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            on_first_token: None,
            cache_details: false,
        }
    }

    fn call(api: ApiFlavor, enforce: bool, messages: &[(String, String)]) -> Value {
        body_json(&Call {
            enforce_output_length: enforce,
            ..call_of(api, messages)
        })
    }

    #[test]
    fn request_bodies_stream_with_usage_and_enforce_lengths() {
        let msgs = vec![
            ("system".to_owned(), "s".to_owned()),
            ("user".to_owned(), "hi there".to_owned()),
        ];
        let v = call(ApiFlavor::Chat, true, &msgs);
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(
            (
                v["max_tokens"].clone(),
                v["min_tokens"].clone(),
                v["ignore_eos"].clone()
            ),
            (json!(37), json!(37), json!(true))
        );
        assert_eq!(v["messages"][1]["content"], "hi there");
        let v = call(ApiFlavor::Completions, false, &msgs);
        assert!(v.get("min_tokens").is_none() && v.get("ignore_eos").is_none());
        assert_eq!(
            v["prompt"],
            render_chat([("system", "s"), ("user", "hi there")])
        );
    }

    #[test]
    fn events_of_other_shapes_are_skipped_and_garbage_is_not() {
        assert!(matches!(
            parse_event(r#"{"error": {"message": "x"}}"#),
            Ok(Some(_))
        ));
        assert!(matches!(parse_event(r#"{"choices": 5}"#), Ok(None)));
        assert!(matches!(parse_event("[1, 2]"), Ok(None)));
        assert!(parse_event("{not json").is_err());
        let c = parse_event(
            r#"{"choices":[{"delta":{"reasoning_content":"hm"},"finish_reason":null}]}"#,
        )
        .expect("json")
        .expect("a chunk");
        let mut reply = Reply::new();
        absorb(&mut reply, &c, Instant::now());
        assert_eq!(reply.text, "hm", "reasoning content counts as a token");
        assert!(reply.first_token.is_some());
    }

    /// SGLang's `sglext` event (no choices) gives the tiers; a shape kvbench does not know
    /// there is ignored, and costs the event nothing else.
    #[test]
    fn sglang_tier_details_are_read_and_bad_ones_ignored() {
        let read = |event: &str| {
            let mut reply = Reply::new();
            let c = parse_event(event).expect("json").expect("a chunk");
            absorb(&mut reply, &c, Instant::now());
            reply
        };
        let r = read(
            r#"{"choices":[],"sglext":{"cached_tokens_details":{"device":4,"host":1,"storage":2,"storage_backend":"file"}}}"#,
        );
        assert_eq!(
            r.cached_tokens_details,
            Some(CachedTokensDetails {
                device: 4,
                host: 1,
                storage: Some(2)
            })
        );
        let r = read(r#"{"choices":[],"sglext":{"cached_tokens_details":{"device":2,"host":0}}}"#);
        assert_eq!(
            r.cached_tokens_details,
            Some(CachedTokensDetails {
                device: 2,
                host: 0,
                storage: None
            })
        );
        for bad in [
            r#"{"choices":[],"sglext":{"cached_tokens_details":{"device":false,"host":0}},"usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":6}}}"#,
            r#"{"choices":[],"sglext":{"cached_tokens_details":{"device":-1,"host":0}},"usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":6}}}"#,
            r#"{"choices":[],"sglext":{"cached_tokens_details":{"host":3}},"usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":6}}}"#,
            r#"{"choices":[],"sglext":"x","usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":6}}}"#,
        ] {
            let r = read(bad);
            assert_eq!(r.cached_tokens_details, None, "{bad}");
            assert_eq!(
                (r.prompt_tokens, r.cached_tokens),
                (Some(9), Some(6)),
                "{bad}"
            );
        }
        let body = body_json(&Call {
            cache_details: true,
            ..call_of(ApiFlavor::Chat, &[])
        });
        assert_eq!(body["return_cached_tokens_details"], true);
        assert!(call(ApiFlavor::Chat, false, &[])
            .get("return_cached_tokens_details")
            .is_none());
    }
}
