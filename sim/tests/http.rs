//! kvbench-sim over real HTTP on loopback: the OpenAI-compatible surface, vLLM's metric
//! names, and the reset endpoint refusing while requests hold blocks.

use std::time::Duration;

use kvbench_sim::SimConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one HTTP/1.1 request with `Connection: close` and reads the whole response.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The `data:` payloads of an SSE body (chunked transfer framing lines are skipped).
fn sse_events(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

#[tokio::test]
async fn chat_stream_reports_usage_and_cached_tokens() {
    let sim = kvbench_sim::spawn(SimConfig::default())
        .await
        .expect("sim starts");
    let words: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
    let body = serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": words.join(" ")}],
        "max_tokens": 5,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string();
    let mut cached = Vec::new();
    let mut created = Vec::new();
    for _ in 0..2 {
        let (status, text) = http(sim.addr, "POST", "/v1/chat/completions", &body).await;
        assert_eq!(status, 200);
        let events = sse_events(&text);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).expect("JSON chunk"))
            .collect();
        // Role chunk, 5 token chunks, usage chunk.
        assert_eq!(chunks.len(), 7);
        assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "length");
        let usage = &chunks[6]["usage"];
        assert_eq!(chunks[6]["choices"], serde_json::json!([]));
        // 200 words plus the template: `<|im_start|> user ... <|im_end|>` + `<|im_start|> assistant`.
        assert_eq!(usage["prompt_tokens"], 205);
        assert_eq!(usage["completion_tokens"], 5);
        cached.push(
            usage["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .expect("cached"),
        );
        created.push(
            usage["prompt_tokens_details"]["created_cache_tokens"]
                .as_u64()
                .expect("created_cache_tokens (chat, as vLLM 0.32)"),
        );
    }
    // Cold, then every full block of the 205-token prompt: 12 blocks of 16 = 192. The
    // first request added those 192 to the cache, the second nothing.
    assert_eq!(cached, vec![0, 192]);
    assert_eq!(created, vec![192, 0]);

    let (_, m) = http(sim.addr, "GET", "/metrics", "").await;
    assert_eq!(metric(&m, "vllm:prefix_cache_queries_total"), 410.0);
    assert_eq!(metric(&m, "vllm:prefix_cache_hits_total"), 192.0);
    assert_eq!(metric(&m, "vllm:prompt_tokens_total"), 410.0);
    assert_eq!(metric(&m, "vllm:generation_tokens_total"), 10.0);
    assert_eq!(metric(&m, "vllm:request_success_total"), 2.0);
    assert_eq!(metric(&m, "vllm:num_requests_running"), 0.0);
    assert_eq!(metric(&m, "vllm:num_requests_waiting"), 0.0);
    assert_eq!(metric(&m, "vllm:kv_cache_usage_perc"), 0.0);
    // vLLM 0.32's counters by source: what was computed and what came from the cache.
    let source = |name: &str, s: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&format!("source=\"{s}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} {s} missing"))
    };
    assert_eq!(metric(&m, "vllm:prompt_tokens_cached_total"), 192.0);
    assert_eq!(
        source("vllm:prompt_tokens_by_source_total", "local_compute"),
        218.0
    );
    assert_eq!(
        source("vllm:prompt_tokens_by_source_total", "local_cache_hit"),
        192.0
    );
    assert_eq!(
        source("vllm:prompt_tokens_cached_by_source_total", "device"),
        192.0
    );
    assert_eq!(
        source("vllm:prompt_tokens_cached_by_source_total", "host"),
        0.0
    );
    assert_eq!(metric(&m, "vllm:external_prefix_cache_hits_total"), 0.0);
    sim.stop().await;
}

/// Given a model's `tokenizer.json`, the sim counts and caches prompts in its tokens, and
/// `/tokenize` answers in them.
#[tokio::test]
async fn a_tokenizer_json_decides_the_tokens() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("tokenizer.json");
    // A word-level tokenizer: each of three words is one token, anything else <unk>.
    std::fs::write(
        &path,
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
"model":{"type":"WordLevel","vocab":{"<unk>":0,"cache":1,"block":2,"token":3},"unk_token":"<unk>"}}"#,
    )
    .expect("write");
    let bad = SimConfig {
        tokenizer: Some(dir.path().join("missing.json")),
        ..SimConfig::default()
    };
    assert!(bad
        .validate()
        .is_err_and(|e| e.to_string().starts_with("--tokenizer ")));
    let sim = kvbench_sim::spawn(SimConfig {
        tokenizer: Some(path),
        block_size: 4,
        ..SimConfig::default()
    })
    .await
    .expect("sim starts");
    let (status, body) = http(
        sim.addr,
        "POST",
        "/tokenize",
        r#"{"prompt": "cache block token cache"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["tokens"], serde_json::json!([1, 2, 3, 1]));
    let body = serde_json::json!({"model": "m", "prompt": "cache block token cache block token cache block token", "max_tokens": 1}).to_string();
    let mut cached = Vec::new();
    for _ in 0..2 {
        let (_, text) = http(sim.addr, "POST", "/v1/completions", &body).await;
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["usage"]["prompt_tokens"], 9);
        cached.push(v["usage"]["prompt_tokens_details"]["cached_tokens"].clone());
    }
    // Two full 4-token blocks of the 9 tokens.
    assert_eq!(cached, [serde_json::json!(0), serde_json::json!(8)]);
    sim.stop().await;
}

#[tokio::test]
async fn completions_non_streaming_models_and_health() {
    let sim = kvbench_sim::spawn(SimConfig::default())
        .await
        .expect("sim starts");
    let (status, text) = http(
        sim.addr,
        "POST",
        "/v1/completions",
        r#"{"model":"m","prompt":"a b c d","max_tokens":3}"#,
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(
        v["choices"][0]["text"]
            .as_str()
            .map(|t| t.split(' ').count()),
        Some(3)
    );
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

    let (status, text) = http(sim.addr, "GET", "/v1/models", "").await;
    assert_eq!(status, 200);
    assert!(text.contains("kvbench-sim"));
    assert_eq!(http(sim.addr, "GET", "/health", "").await.0, 200);
    assert_eq!(
        http(sim.addr, "POST", "/v1/completions", "not json")
            .await
            .0,
        400
    );
    assert_eq!(http(sim.addr, "GET", "/nope", "").await.0, 404);
    sim.stop().await;
}

#[tokio::test]
async fn reset_is_refused_while_a_request_holds_blocks() {
    let sim = kvbench_sim::spawn(SimConfig::default())
        .await
        .expect("sim starts");
    let words: Vec<String> = (0..64).map(|i| format!("w{i}")).collect();
    let body = serde_json::json!({
        "prompt": words.join(" "), "max_tokens": 1000, "stream": true,
    })
    .to_string();
    // A long request: start it and wait for its first token, so it holds KV blocks.
    let mut s = TcpStream::connect(sim.addr).await.expect("connect");
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: ") {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    let (status, text) = http(sim.addr, "POST", "/reset_prefix_cache", "").await;
    assert_eq!(status, 200);
    assert_eq!(text.trim(), r#"{"success":false}"#);

    // The client goes away: the sim frees the slot and the blocks, and the reset succeeds.
    drop(s);
    let mut ok = false;
    for _ in 0..100 {
        let (_, text) = http(sim.addr, "POST", "/reset_prefix_cache", "").await;
        if text.trim() == r#"{"success":true}"# {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "reset succeeds once the request is gone");
    let c = sim.engine.counters();
    assert_eq!((c.running, c.request_success), (0, 0));
    sim.stop().await;
}

/// The latency model on tokio's paused clock: time advances only through the sim's own
/// timers, so the figures are exact and independent of this machine's speed.
#[tokio::test(start_paused = true)]
async fn latency_model_defaults_cold_vs_cached_prefill() {
    let sim = kvbench_sim::spawn(SimConfig::default())
        .await
        .expect("sim starts");
    let words: Vec<String> = (0..4000).map(|i| format!("w{i}")).collect();
    let body = serde_json::json!({"prompt": words.join(" "), "max_tokens": 1}).to_string();
    let mut ms = Vec::new();
    for _ in 0..2 {
        let t = tokio::time::Instant::now();
        let (status, _) = http(sim.addr, "POST", "/v1/completions", &body).await;
        assert_eq!(status, 200);
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // Cold: 20 ms + 4,000 x 95 us = 400 ms. Cached: 3,984 tokens hit (249 blocks), so
    // 20 ms + 16 x 95 us = 21.52 ms.
    assert!((ms[0] - 400.0).abs() < 1.0, "cold prefill {} ms", ms[0]);
    assert!((ms[1] - 21.52).abs() < 1.0, "cached prefill {} ms", ms[1]);

    // Decode: each step after the first token costs 10 ms + 50 us per running sequence.
    let body = serde_json::json!({"prompt": "x y z", "max_tokens": 11}).to_string();
    let t = tokio::time::Instant::now();
    http(sim.addr, "POST", "/v1/completions", &body).await;
    let took = t.elapsed().as_secs_f64() * 1000.0;
    let expect = 20.0 + 3.0 * 0.095 + 10.0 * (10.0 + 0.05);
    // tokio's timers fire on whole milliseconds: allow one per timer chain (prefill, decode).
    assert!(
        (took - expect).abs() < 2.0,
        "decode took {took} ms, expected {expect}"
    );
    sim.stop().await;
}

/// Reads from a blocking socket until `done` says the bytes so far are enough.
/// Waits until the kernel stamps TCP reads (it turns stamping on as deferred work once a
/// socket asks, which a busy machine may run late) and returns the socket pair that keeps
/// it on.
fn kernel_stamps_tcp_reads() -> (std::net::TcpStream, std::net::TcpStream) {
    use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
    use std::io::{IoSliceMut, Write};
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut tx =
        std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (rx, _) = listener.accept().expect("accept");
    setsockopt(&rx, sockopt::ReceiveTimestampns, &true).expect("SO_TIMESTAMPNS");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        tx.write_all(b"x").expect("write");
        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let msg = recvmsg::<()>(
            rx.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .expect("recvmsg");
        let stamped = msg
            .cmsgs()
            .expect("cmsgs")
            .any(|c| matches!(c, ControlMessageOwned::ScmTimestampns(_)));
        if stamped {
            return (tx, rx);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the kernel never stamped a TCP read"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_until(s: &mut std::net::TcpStream, buf: &mut Vec<u8>, done: impl Fn(&str) -> bool) {
    use std::io::Read;
    let mut chunk = [0u8; 4096];
    while !done(&String::from_utf8_lossy(buf)) {
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A request that reaches the host while the sim is busy counts its TTFT from its arrival
/// (the kernel's receive time), not from when the sim got round to reading it: the sim's
/// lateness is the engine's time, never billed to the client as harness overhead.
#[test]
fn ttft_counts_from_when_the_request_reached_the_host() {
    use std::io::Write;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (block_tx, mut block_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (blocked_tx, blocked_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let sim = kvbench_sim::spawn(SimConfig {
                fixed_ttft_ms: Some(20.0),
                fixed_itl_ms: Some(5.0),
                ..SimConfig::default()
            })
            .await
            .expect("sim starts");
            addr_tx.send(sim.addr).expect("address");
            while block_rx.recv().await.is_some() {
                blocked_tx.send(()).expect("blocked");
                // The sim's only thread is busy: nothing reads what arrives meanwhile.
                std::thread::sleep(Duration::from_millis(150));
            }
        });
    });
    let addr = addr_rx.recv().expect("the sim's address");
    let _stamping = kernel_stamps_tcp_reads();
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    // A first request on the connection: the sim has accepted it and stamps its reads.
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut buf = Vec::new();
    read_until(&mut s, &mut buf, |t| t.contains("\r\n\r\n"));
    block_tx.send(()).expect("block the sim");
    blocked_rx.recv().expect("the sim is blocked");
    let body =
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"stream":true}"#;
    // One write: the whole request in one segment.
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let sent = std::time::Instant::now();
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = Vec::new();
    let stamped = |t: &str| {
        t.split_once("\"kvbench_server_ttft_us\":")
            .is_some_and(|(_, rest)| rest.contains(['}', ',']))
    };
    read_until(&mut s, &mut buf, stamped);
    let client_ttft_ms = sent.elapsed().as_secs_f64() * 1000.0;
    let text = String::from_utf8_lossy(&buf);
    let (_, rest) = text
        .split_once("\"kvbench_server_ttft_us\":")
        .expect("stamp");
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let server_ttft_ms = digits.parse::<f64>().expect("a number") / 1000.0;
    assert!(
        server_ttft_ms >= 140.0,
        "the sim knew the request had waited: {server_ttft_ms:.1} ms (client {client_ttft_ms:.1} ms)"
    );
    assert!(
        client_ttft_ms - server_ttft_ms < 20.0,
        "the sim's lateness is not the client's: client {client_ttft_ms:.1} ms, sim {server_ttft_ms:.1} ms"
    );
}

/// SGLang's surface on the sim: `return_cached_tokens_details` splits each request's cached
/// tokens into the device cache's and the host tier's (the offload tier), streamed as an
/// event of its own and in a whole answer; `/flush_cache` clears both tiers.
#[tokio::test]
async fn sglang_cache_details_split_device_and_host_and_flush_clears_both() {
    let sim = kvbench_sim::spawn(SimConfig {
        offload_blocks: 100,
        ..SimConfig::default()
    })
    .await
    .expect("sim starts");
    let words: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
    let body = |stream: bool| {
        serde_json::json!({
            "model": "m",
            "messages": [{"role": "user", "content": words.join(" ")}],
            "max_tokens": 3,
            "stream": stream,
            "stream_options": {"include_usage": true},
            "return_cached_tokens_details": true,
        })
        .to_string()
    };
    // (device, host, cached) of one request.
    let ask = |stream: bool| {
        let b = body(stream);
        async move {
            let (status, text) = http(sim.addr, "POST", "/v1/chat/completions", &b).await;
            assert_eq!(status, 200, "{text}");
            let (ext, usage) = if stream {
                let chunks: Vec<Value> = sse_events(&text)
                    .iter()
                    .filter(|e| *e != "[DONE]")
                    .map(|e| serde_json::from_str(e).expect("JSON chunk"))
                    .collect();
                let ext: Vec<&Value> = chunks
                    .iter()
                    .filter(|c| c.get("sglext").is_some())
                    .collect();
                assert_eq!(ext.len(), 1, "one sglext event");
                assert_eq!(ext[0]["choices"], serde_json::json!([]));
                let usage = chunks
                    .iter()
                    .find(|c| c.get("usage").is_some())
                    .expect("usage");
                (ext[0]["sglext"].clone(), usage["usage"].clone())
            } else {
                let v: Value = serde_json::from_str(&text).expect("JSON answer");
                (v["sglext"].clone(), v["usage"].clone())
            };
            let d = &ext["cached_tokens_details"];
            (
                d["device"].as_u64().expect("device"),
                d["host"].as_u64().expect("host"),
                usage["prompt_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .expect("cached"),
            )
        }
    };
    assert_eq!(ask(true).await, (0, 0, 0), "cold");
    // vLLM's reset without reset_external leaves the host tier: all 12 blocks come from it.
    let (status, _) = http(sim.addr, "POST", "/reset_prefix_cache", "").await;
    assert_eq!(status, 200);
    assert_eq!(ask(false).await, (0, 192, 192), "from the host tier");
    assert_eq!(ask(true).await, (192, 0, 192), "from the device cache");
    let (status, text) = http(sim.addr, "POST", "/flush_cache", "").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(ask(true).await, (0, 0, 0), "both tiers flushed");
    // A request that does not ask gets no sglext.
    let plain = serde_json::json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
    })
    .to_string();
    let (_, text) = http(sim.addr, "POST", "/v1/chat/completions", &plain).await;
    assert!(!text.contains("sglext"), "{text}");
    sim.stop().await;
}
