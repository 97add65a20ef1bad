//! The simulator's HTTP surface (hyper, HTTP/1.1).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kvbench_common::tokenizer::render_chat;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, Fault, Running};
use crate::socket::{stamp_accepted, Arrival, Gate, StreamEnded};

type BodyError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BodyError>;
type FrameTx = mpsc::Sender<Result<Frame<Bytes>, BodyError>>;

const MAX_BODY_BYTES: usize = 64 << 20;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    stamp_accepted(&listener);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            // `--close-after-stream`: set when a streamed response's body has ended.
            let ended = engine
                .config
                .close_after_stream
                .then(|| Arc::new(StreamEnded::default()));
            let arrival = Arc::new(Arrival::default());
            let io = Gate::new(stream, ended.clone(), arrival.clone());
            let on_end = ended.clone();
            let svc =
                service_fn(move |req| handle(engine.clone(), req, on_end.clone(), arrival.clone()));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            let ended = async {
                match &ended {
                    Some(e) => e.notify.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { tracing::debug!(error = %e, "connection ended") },
                // The response's last bytes go out; no new request is read; then the
                // connection closes, though its headers promised keep-alive (a request the
                // client wrote meanwhile dies unanswered, as with llama.cpp's server).
                _ = ended => {
                    let _ = tokio::time::timeout(CLOSE_DELAY, conn.as_mut()).await;
                }
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    full(status, "application/json", v.to_string())
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"object": "error", "message": message, "type": "BadRequestError", "code": status.as_u16()}),
    )
}

/// How long a `--close-after-stream` connection lingers after its response, reading nothing.
const CLOSE_DELAY: Duration = Duration::from_millis(20);

async fn handle(
    engine: Arc<Engine>,
    req: Request<Incoming>,
    close: Option<Arc<StreamEnded>>,
    arrival: Arc<Arrival>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    Ok(match (req.method().clone(), path.as_str()) {
        (Method::GET, "/health") => full(StatusCode::OK, "text/plain", ""),
        // As vLLM answers it.
        (Method::GET, "/version") => json_response(
            StatusCode::OK,
            &json!({"version": concat!("kvbench-sim ", env!("CARGO_PKG_VERSION"))}),
        ),
        (Method::GET, "/v1/models") => json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [{
                "id": engine.config.model, "object": "model", "owned_by": "kvbench-sim",
                "max_model_len": engine.config.num_blocks * engine.config.block_size,
            }]}),
        ),
        (Method::GET, "/metrics") => full(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics_text(&engine),
        ),
        (Method::POST, "/reset_prefix_cache") => {
            let external = req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|kv| kv == "reset_external=true"));
            let ok = engine.reset_prefix_cache(external);
            json_response(StatusCode::OK, &json!({"success": ok}))
        }
        // SGLang's reset of its radix cache and host tier: 400 while requests run.
        (Method::POST, "/flush_cache") => {
            if engine.reset_prefix_cache(true) {
                full(StatusCode::OK, "text/plain", "Cache flushed.\n")
            } else {
                full(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "Cache not flushed: requests are running.\n",
                )
            }
        }
        (Method::POST, "/tokenize") => tokenize_endpoint(&engine, req).await,
        (Method::POST, "/v1/chat/completions") => {
            generate(engine, req, true, close, &arrival).await
        }
        (Method::POST, "/v1/completions") => generate(engine, req, false, close, &arrival).await,
        (_, p) => error(StatusCode::NOT_FOUND, &format!("no route {p}")),
    })
}

/// `POST /tokenize` (vLLM's `prompt`, llama.cpp's `content`): the text's tokens in the
/// simulator's tokenizer, with their `count`.
async fn tokenize_endpoint(engine: &Engine, req: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("cannot read body: {e}")),
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not JSON: {e}")),
    };
    let Some(text) = v
        .get("prompt")
        .or_else(|| v.get("content"))
        .and_then(Value::as_str)
    else {
        return error(StatusCode::BAD_REQUEST, "give `prompt` (or `content`)");
    };
    let tokens = engine.tokens(text);
    json_response(
        StatusCode::OK,
        &json!({"count": tokens.len(), "tokens": tokens}),
    )
}

/// The parts of a generation request the simulator reads.
struct GenRequest {
    chat: bool,
    model: String,
    prompt: String,
    max_tokens: u32,
    stream: bool,
    include_usage: bool,
    /// SGLang's `return_cached_tokens_details`: say per request which tier gave its cached
    /// tokens (`sglext.cached_tokens_details`).
    cache_details: bool,
}

fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        // Content parts: concatenate the text parts.
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A request body the sim cannot serve (answered 400 with this text).
#[derive(Debug, thiserror::Error)]
enum BadRequest {
    #[error("invalid JSON body: {0}")]
    Json(#[from] serde_json::Error),
    #[error("`messages` must be a list")]
    Messages,
    #[error("`prompt` must be a string")]
    Prompt,
}

fn parse_request(engine: &Engine, body: &[u8], chat: bool) -> Result<GenRequest, BadRequest> {
    let v: Value = serde_json::from_slice(body)?;
    let prompt = if chat {
        let msgs = v
            .get("messages")
            .and_then(Value::as_array)
            .ok_or(BadRequest::Messages)?;
        let parts: Vec<(String, String)> = msgs
            .iter()
            .map(|m| {
                let role = m
                    .get("role")
                    .and_then(Value::as_str)
                    .unwrap_or("user")
                    .to_owned();
                (role, m.get("content").map(content_text).unwrap_or_default())
            })
            .collect();
        render_chat(parts.iter().map(|(r, c)| (r.as_str(), c.as_str())))
    } else {
        match v.get("prompt") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_owned()
            }
            _ => return Err(BadRequest::Prompt),
        }
    };
    let max_tokens = v
        .get("max_completion_tokens")
        .or_else(|| v.get("max_tokens"))
        .and_then(Value::as_u64)
        .map_or(engine.config.default_max_tokens, |n| {
            n.min(u64::from(u32::MAX)) as u32
        })
        .max(1);
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = v
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(&engine.config.model)
        .to_owned();
    let cache_details = v
        .get("return_cached_tokens_details")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(GenRequest {
        chat,
        model,
        prompt,
        max_tokens,
        stream,
        include_usage,
        cache_details,
    })
}

/// SGLang's extension object (`sglext`), as it answers `return_cached_tokens_details`:
/// the cached tokens from the device cache and those loaded from the host tier (the
/// offload tier here).
fn sglext(r: &Running) -> Value {
    json!({"cached_tokens_details": {
        "device": r.cached_tokens.saturating_sub(r.loaded_tokens),
        "host": r.loaded_tokens,
    }})
}

/// The usage object, as vLLM 0.32 writes it with `--enable-prompt-tokens-details`: chat
/// answers also say how many prompt tokens this request added to the cache
/// (`created_cache_tokens`: its full blocks that were not cached).
fn usage(r: &Running, completion: u32, chat: bool) -> Value {
    let mut details = json!({"cached_tokens": r.cached_tokens});
    if chat {
        details["created_cache_tokens"] = json!(r.created_cache_tokens);
    }
    json!({
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": r.prompt_tokens + completion,
        "prompt_tokens_details": details,
    })
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn generate(
    engine: Arc<Engine>,
    req: Request<Incoming>,
    chat: bool,
    close: Option<Arc<StreamEnded>>,
    arrival: &Arrival,
) -> Response<Body> {
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("cannot read body: {e}")),
    };
    // When its last bytes reached the host (the kernel's stamp): from then, engine time.
    let received = arrival.instant();
    let g = match parse_request(&engine, &body, chat) {
        Ok(g) => g,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let id = format!(
        "{}-{}",
        if chat { "chatcmpl" } else { "cmpl" },
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    );
    let fault = engine.draw_fault(g.stream);
    match fault {
        Some(Fault::Http5xx) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "injected fault: internal server error",
            )
        }
        Some(Fault::Http429) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "injected fault: too many requests",
            );
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            return r;
        }
        _ => {}
    }
    if g.stream {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BodyError>>(16);
        tokio::spawn(stream_tokens(engine, g, id, tx, received, fault));
        let frames = stamp_where_it_leaves(ReceiverStream::new(rx), received);
        let mut r = match close {
            None => Response::new(StreamBody::new(frames).boxed()),
            Some(close) => {
                // Past the last frame: the connection stops reading and closes.
                let at_end = tokio_stream::iter(std::iter::from_fn(move || {
                    close.ended.store(true, Ordering::Release);
                    close.notify.notify_one();
                    None
                }));
                let mut r = Response::new(
                    StreamBody::new(tokio_stream::StreamExt::chain(frames, at_end)).boxed(),
                );
                r.headers_mut()
                    .insert("keep-alive", HeaderValue::from_static("timeout=5, max=100"));
                r
            }
        };
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        r
    } else {
        let mut running = engine.admit(&g.prompt).await;
        running.prefill(received).await;
        let mut text = String::new();
        let mut next = tokio::time::Instant::now();
        for i in 0..g.max_tokens {
            if i > 0 {
                next += running.decode_step();
                tokio::time::sleep_until(next).await;
                text.push(' ');
            }
            text.push_str(running.token(i));
        }
        running.finish(g.max_tokens);
        let choice = if g.chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"})
        } else {
            json!({"index": 0, "text": text, "finish_reason": "length"})
        };
        let mut answer = json!({
            "id": id,
            "object": if g.chat { "chat.completion" } else { "text_completion" },
            "created": now_s(),
            "model": g.model,
            "choices": [choice],
            "usage": usage(&running, g.max_tokens, g.chat),
        });
        if g.cache_details {
            answer["sglext"] = sglext(&running);
        }
        json_response(StatusCode::OK, &answer)
    }
}

fn sse(v: &Value) -> Result<Frame<Bytes>, BodyError> {
    Ok(Frame::data(Bytes::from(format!("data: {v}\n\n"))))
}

/// Produces one SSE event per token. Ends early, freeing the slot and the blocks, when the
/// client goes away.
async fn stream_tokens(
    engine: Arc<Engine>,
    g: GenRequest,
    id: String,
    tx: FrameTx,
    received: tokio::time::Instant,
    fault: Option<Fault>,
) {
    let start = async {
        let mut running = engine.admit(&g.prompt).await;
        running.prefill(received).await;
        running
    };
    let running = tokio::select! {
        r = start => r,
        _ = tx.closed() => return,
    };
    let created = now_s();
    let object = if g.chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let chunk = |choices: Value| json!({"id": id, "object": object, "created": created, "model": g.model, "choices": choices});
    // Token events are written by hand from this prefix: one per token per stream is the
    // simulator's hot path.
    let head = format!(
        "data: {{\"id\":{},\"object\":\"{object}\",\"created\":{created},\"model\":{},\"choices\":[",
        Value::from(id.as_str()),
        Value::from(g.model.as_str())
    );
    if g.chat {
        // vLLM opens a chat stream with a role-only chunk whose content is empty.
        let first = chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        );
        if tx.send(sse(&first)).await.is_err() {
            return;
        }
    }
    // Stream faults strike halfway through the output, after at least one token.
    let fault_at = (g.max_tokens / 2).max(1);
    let mut next = tokio::time::Instant::now();
    for i in 0..g.max_tokens {
        if i > 0 {
            next += running.decode_step();
            tokio::time::sleep_until(next).await;
        }
        if let Some(f) = fault.filter(|_| i == fault_at) {
            inject(f, &tx).await;
            return;
        }
        let word = running.token(i);
        let text = if i == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        };
        let finish = if i + 1 == g.max_tokens {
            "\"length\""
        } else {
            "null"
        };
        // The first token's event says when it left the server: its stamp is written in
        // when the HTTP layer takes the event to write it (see `stamp_where_it_leaves`).
        let c = token_event(&head, g.chat, &text, finish, i == 0);
        if tx.send(Ok(Frame::data(c))).await.is_err() {
            return;
        }
    }
    if let Some(f) = fault {
        // A one-token stream: the fault comes after its only token.
        inject(f, &tx).await;
        return;
    }
    running.finish(g.max_tokens);
    if g.cache_details {
        // As SGLang streams it: an event of its own, with no choices.
        let mut ext = chunk(json!([]));
        ext["sglext"] = sglext(&running);
        if tx.send(sse(&ext)).await.is_err() {
            return;
        }
    }
    if g.include_usage {
        let mut last = chunk(json!([]));
        last["usage"] = usage(&running, g.max_tokens, g.chat);
        if tx.send(sse(&last)).await.is_err() {
            return;
        }
    }
    let _ = tx
        .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
        .await;
}

/// Where the first token's `kvbench_server_ttft_us` goes, until the event leaves.
const STAMP: &[u8] = b"\"kvbench_server_ttft_us\":@";

/// The stream's events as the HTTP layer takes them to write: the first token's stamp is
/// filled in at that moment (time since the request arrived), not when the event was made,
/// so that the time an event waits for the connection to take it counts as the server's.
/// The harness's overhead is the client's TTFT minus this stamp.
fn stamp_where_it_leaves(
    frames: ReceiverStream<Result<Frame<Bytes>, BodyError>>,
    received: tokio::time::Instant,
) -> impl tokio_stream::Stream<Item = Result<Frame<Bytes>, BodyError>> {
    let mut pending = true;
    tokio_stream::StreamExt::map(frames, move |f| {
        if !pending {
            return f;
        }
        let Ok(frame) = f else { return f };
        let Some(data) = frame.data_ref() else {
            return Ok(frame);
        };
        let Some(at) = data.windows(STAMP.len()).position(|w| w == STAMP) else {
            return Ok(frame);
        };
        pending = false;
        let us = received.elapsed().as_micros() as u64;
        let key = STAMP.len() - 1;
        let mut out = Vec::with_capacity(data.len() + 8);
        out.extend_from_slice(&data[..at + key]);
        out.extend_from_slice(us.to_string().as_bytes());
        out.extend_from_slice(&data[at + STAMP.len()..]);
        Ok(Frame::data(Bytes::from(out)))
    })
}

/// One token's SSE event, after `head` (`data: {"id":...,"choices":[`); the first token's
/// carries the stamp placeholder.
fn token_event(head: &str, chat: bool, text: &str, finish: &str, first: bool) -> Bytes {
    let text = Value::from(text);
    let body = if chat {
        format!("{{\"index\":0,\"delta\":{{\"content\":{text}}},\"finish_reason\":{finish}}}")
    } else {
        format!("{{\"index\":0,\"text\":{text},\"finish_reason\":{finish}}}")
    };
    let extra = if first {
        format!(",{}", String::from_utf8_lossy(STAMP))
    } else {
        String::new()
    };
    Bytes::from(format!("{head}{body}]{extra}}}\n\n"))
}

/// Breaks the stream the way `fault` says.
async fn inject(fault: Fault, tx: &FrameTx) {
    let data = |b: &'static [u8]| Ok(Frame::data(Bytes::from_static(b)));
    match fault {
        Fault::Reset => {
            // An error in the body makes hyper abort the connection mid-message.
            let _ = tx
                .send(Err("injected fault: connection reset".into()))
                .await;
        }
        Fault::MalformedSse => {
            let _ = tx
                .send(data(b"this line is not server-sent events\n\n"))
                .await;
        }
        Fault::MalformedJson => {
            let _ = tx
                .send(data(b"data: {\"choices\": [{\"delta\": \n\n"))
                .await;
        }
        Fault::Stall => {
            // Hold the connection open, sending nothing, until the client gives up.
            let _ = tokio::time::timeout(Duration::from_secs(600), tx.closed()).await;
        }
        Fault::Http5xx | Fault::Http429 => {}
    }
}

fn metrics_text(engine: &Engine) -> String {
    let c = engine.counters();
    let (_, capacity, usage, _) = engine.cache_usage();
    let model = &engine.config.model;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{{engine=\"0\",model_name=\"{model}\"}} {value}");
    };
    metric(
        "vllm:num_requests_running",
        "gauge",
        "Number of requests in model execution batches.",
        c.running as f64,
    );
    metric(
        "vllm:num_requests_waiting",
        "gauge",
        "Number of requests waiting to be processed.",
        c.waiting as f64,
    );
    metric(
        "vllm:kv_cache_usage_perc",
        "gauge",
        "KV-cache usage. 1 means 100 percent usage.",
        usage,
    );
    metric(
        "vllm:prefix_cache_queries_total",
        "counter",
        "Prefix cache queries, in terms of number of queried tokens.",
        c.prefix_cache_queries as f64,
    );
    metric(
        "vllm:prefix_cache_hits_total",
        "counter",
        "Prefix cache hits, in terms of number of cached tokens.",
        c.prefix_cache_hits as f64,
    );
    metric(
        "vllm:prompt_tokens_total",
        "counter",
        "Number of prefill tokens processed.",
        c.prompt_tokens as f64,
    );
    metric(
        "vllm:external_prefix_cache_queries_total",
        "counter",
        "External prefix cache queries from KV connector cross-instance cache sharing, in terms of number of queried tokens.",
        c.external_queries as f64,
    );
    metric(
        "vllm:external_prefix_cache_hits_total",
        "counter",
        "External prefix cache hits from KV connector cross-instance cache sharing, in terms of number of cached tokens.",
        c.external_hits as f64,
    );
    metric(
        "vllm:prompt_tokens_cached_total",
        "counter",
        "Number of cached prompt tokens (local + external).",
        (c.prefix_cache_hits + c.external_hits) as f64,
    );
    metric(
        "vllm:generation_tokens_total",
        "counter",
        "Number of generation tokens processed.",
        c.generation_tokens as f64,
    );
    metric(
        "vllm:request_success_total",
        "counter",
        "Count of successfully processed requests.",
        c.request_success as f64,
    );
    let by_source = [
        (
            "vllm:prompt_tokens_by_source_total",
            "Number of prompt tokens by source.",
            [
                (
                    "local_compute",
                    c.prompt_tokens
                        .saturating_sub(c.prefix_cache_hits + c.external_hits),
                ),
                ("local_cache_hit", c.prefix_cache_hits),
                ("external_kv_transfer", c.external_hits),
            ],
        ),
        (
            "vllm:prompt_tokens_cached_by_source_total",
            "Number of cached prompt tokens by source.",
            [
                ("device", c.prefix_cache_hits.saturating_sub(c.host_hits)),
                ("host", c.host_hits),
                ("external", c.external_hits),
            ],
        ),
    ];
    for (name, help, sources) in by_source {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (source, v) in sources {
            let _ = writeln!(
                out,
                "{name}{{engine=\"0\",model_name=\"{model}\",source=\"{source}\"}} {v}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP kvbench_sim:max_num_requests_running Most requests running at once since start."
    );
    let _ = writeln!(out, "# TYPE kvbench_sim:max_num_requests_running gauge");
    let _ = writeln!(
        out,
        "kvbench_sim:max_num_requests_running {}",
        c.max_running
    );
    let _ = writeln!(
        out,
        "# HELP kvbench_sim:evicted_miss_tokens_total Prompt tokens that missed the cache because their blocks had been evicted since they were computed."
    );
    let _ = writeln!(out, "# TYPE kvbench_sim:evicted_miss_tokens_total counter");
    let _ = writeln!(
        out,
        "kvbench_sim:evicted_miss_tokens_total {}",
        c.evicted_miss_tokens
    );
    let _ = writeln!(
        out,
        "# HELP kvbench_sim:faults_injected_total Faults injected, by kind."
    );
    let _ = writeln!(out, "# TYPE kvbench_sim:faults_injected_total counter");
    for (f, n) in &c.faults {
        let _ = writeln!(
            out,
            "kvbench_sim:faults_injected_total{{kind=\"{}\"}} {n}",
            f.label()
        );
    }
    let _ = writeln!(
        out,
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig"
    );
    let _ = writeln!(out, "# TYPE vllm:cache_config_info gauge");
    let _ = writeln!(
        out,
        "vllm:cache_config_info{{block_size=\"{}\",enable_prefix_caching=\"{}\",engine=\"0\",num_gpu_blocks=\"{}\"}} 1.0",
        engine.config.block_size,
        if engine.config.no_prefix_caching { "False" } else { "True" },
        capacity
    );
    out
}
