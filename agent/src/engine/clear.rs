//! Clearing an engine's caches: an ordered list of HTTP calls, from presets per engine kind
//! (FACTS.md) or written out. Only the agent's own configuration decides these calls.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::http::{call, get, Answer, EngineCallError, HttpClient};

/// How long a step is retried while the engine refuses because requests still run.
pub const RETRY_FOR: Duration = Duration::from_secs(10);

/// One HTTP call of a clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearStep {
    /// What the step clears, for people (`vLLM prefix cache`, ...).
    pub name: String,
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub body: Option<String>,
    /// A JSON boolean field of the answer that must be true (vLLM's `success`).
    #[serde(default)]
    pub success_field: Option<String>,
    /// HTTP statuses that mean "busy, try again" (SGLang answers 400 while requests run).
    #[serde(default)]
    pub retry_statuses: Vec<u16>,
    /// What a 404 or 501 means for this engine.
    #[serde(default)]
    pub missing_hint: Option<String>,
    /// Its failure is reported in the clear's detail but does not fail the clear (the
    /// seed's Mooncake metadata-server call, which clears nothing that holds KV data).
    #[serde(default)]
    pub advisory: bool,
    /// The URL that lists the engine's slots (llama.cpp's `GET /slots`, a JSON list of
    /// objects with an `id`): the step runs once per slot, `{slot}` in its `url` replaced by
    /// each slot's id.
    #[serde(default)]
    pub each_slot: Option<String>,
}

/// The seed's call, `POST {metadata_server_url}/clear`, made as configured: advisory,
/// since Mooncake's metadata server holds no KV data and has no `/clear`.
pub fn mooncake_metadata_step(metadata_server_url: &str) -> ClearStep {
    ClearStep {
        name: "Mooncake metadata server".into(),
        method: "POST".into(),
        url: format!("{}/clear", metadata_server_url.trim_end_matches('/')),
        body: None,
        success_field: None,
        retry_statuses: Vec::new(),
        missing_hint: Some(
            "Mooncake's metadata server holds transfer-engine metadata, not KV data, and has no /clear; the store is cleared by the Mooncake master's POST /api/v1/remove_all (admin port 9003): configure it in the agent's clear_cache (preset mooncake_master)".into(),
        ),
        advisory: true,
        each_slot: None,
    }
}

/// The presets, by name.
pub const PRESETS: [&str; 6] = [
    "vllm",
    "sim",
    "sglang",
    "llamacpp",
    "lmcache",
    "mooncake_master",
];

/// A preset's step against `base` (the engine's base URL, or the service's for LMCache and
/// the Mooncake master). llama.cpp: every slot is erased, or only `slot` when given.
pub fn preset(name: &str, base: &str, slot: Option<u32>) -> Option<ClearStep> {
    let base = base.trim_end_matches('/');
    let step =
        |name: &str, url: String, success: Option<&str>, retry: &[u16], hint: &str| ClearStep {
            name: name.into(),
            method: "POST".into(),
            url,
            body: None,
            success_field: success.map(str::to_owned),
            retry_statuses: retry.to_vec(),
            missing_hint: Some(hint.into()),
            advisory: false,
            each_slot: None,
        };
    Some(match name {
        "vllm" | "sim" => step(
            "vLLM prefix cache (and connector tiers)",
            format!("{base}/reset_prefix_cache?reset_external=true"),
            Some("success"),
            &[],
            "vLLM serves /reset_prefix_cache only with VLLM_SERVER_DEV_MODE=1",
        ),
        "sglang" => step(
            "SGLang radix cache",
            format!("{base}/flush_cache"),
            None,
            &[400],
            "SGLang serves /flush_cache on its HTTP server port",
        ),
        "llamacpp" => {
            let hint = "llama.cpp erases slots only when started with --slot-save-path (the host-RAM prompt cache is not cleared by it: start it with -cram 0, or restart it between scenarios)";
            match slot {
                Some(slot) => step(
                    "llama.cpp slot",
                    format!("{base}/slots/{slot}?action=erase"),
                    None,
                    &[],
                    hint,
                ),
                None => ClearStep {
                    each_slot: Some(format!("{base}/slots")),
                    ..step(
                        "llama.cpp slots",
                        format!("{base}/slots/{{slot}}?action=erase"),
                        None,
                        &[],
                        hint,
                    )
                },
            }
        }
        "lmcache" => ClearStep {
            body: Some("{}".into()),
            ..step(
                "LMCache",
                format!("{base}/clear"),
                None,
                &[],
                "the LMCache controller listens on port 9000 with enable_controller: True",
            )
        },
        "mooncake_master" => step(
            "Mooncake store",
            format!("{base}/api/v1/remove_all?force=true"),
            Some("success"),
            &[],
            "POST /api/v1/remove_all is on the Mooncake master's admin port (9003); older masters lack it: restart the master. The metadata server (port 8080) holds no KV data and has no /clear",
        ),
        _ => return None,
    })
}

/// Runs one step (once per slot for a per-slot step), retrying while the engine says it is
/// busy. `Ok` carries what it answered.
pub async fn run_step(client: &HttpClient, s: &ClearStep) -> Result<String, EngineCallError> {
    let Some(list) = &s.each_slot else {
        return run_one(client, s).await;
    };
    let body = get(client, list, Duration::from_secs(10)).await?;
    let ids: Vec<u64> = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.as_array()
                .map(|a| a.iter().filter_map(|x| x.get("id")?.as_u64()).collect())
        })
        .ok_or_else(|| {
            EngineCallError::answer(format!("GET {list}"), "not a list of slots with ids")
        })?;
    let mut done = Vec::new();
    for id in &ids {
        let one = ClearStep {
            url: s.url.replace("{slot}", &id.to_string()),
            each_slot: None,
            ..s.clone()
        };
        done.push(run_one(client, &one).await?);
    }
    Ok(format!("{} slots erased ({})", ids.len(), done.join("; ")))
}

async fn run_one(client: &HttpClient, s: &ClearStep) -> Result<String, EngineCallError> {
    let method = Method::from_bytes(s.method.as_bytes()).map_err(|_| EngineCallError::Request {
        call: s.name.clone(),
        detail: format!("bad method {}", s.method),
    })?;
    let deadline = Instant::now() + RETRY_FOR;
    let what = format!("{} {}", s.method, s.url);
    loop {
        let Answer { status, body } = call(
            client,
            method.clone(),
            &s.url,
            s.body.as_deref(),
            Duration::from_secs(30),
        )
        .await?;
        let brief: String = body.trim().chars().take(300).collect();
        if matches!(status, StatusCode::NOT_FOUND | StatusCode::NOT_IMPLEMENTED) {
            let hint = s
                .missing_hint
                .as_deref()
                .unwrap_or("the endpoint does not exist");
            return Err(EngineCallError::answer(what, format!("{status}: {hint}")));
        }
        let busy = s.retry_statuses.contains(&status.as_u16());
        let refused = s.success_field.as_ref().is_some_and(|f| {
            serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get(f).and_then(serde_json::Value::as_bool))
                != Some(true)
        });
        if (busy || (status.is_success() && refused)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if !status.is_success() {
            return Err(EngineCallError::answer(
                what,
                format!("HTTP {status}: {brief}"),
            ));
        }
        if refused {
            return Err(EngineCallError::answer(
                what,
                format!(
                    "the engine refused for {} s (answered {brief}; requests still hold KV blocks?)",
                    RETRY_FOR.as_secs()
                ),
            ));
        }
        return Ok(format!("{what}: {brief}"));
    }
}

/// A clear that did not complete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClearFailed {
    #[error("no clear_cache steps are configured for this engine (kind generic): add them to the agent's config file, or restart the engine between scenarios")]
    NoSteps,
    /// A step failed; the steps before it did what `done` says.
    #[error("{}", .done.iter().map(String::as_str).chain([.error.to_string().as_str()]).collect::<Vec<_>>().join("; "))]
    Step {
        done: Vec<String>,
        error: EngineCallError,
    },
}

/// Runs the steps in order, stopping at the first failure.
pub async fn run_all(client: &HttpClient, steps: &[ClearStep]) -> Result<String, ClearFailed> {
    if steps.is_empty() {
        return Err(ClearFailed::NoSteps);
    }
    let mut done = Vec::new();
    for s in steps {
        match run_step(client, s).await {
            Ok(d) => done.push(d),
            Err(e) if s.advisory => done.push(format!("{}: {e}", s.name)),
            Err(error) => return Err(ClearFailed::Step { done, error }),
        }
    }
    Ok(done.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clear_steps_run_in_order_and_stop_at_the_first_failure() {
        let sim = kvbench_sim::spawn(kvbench_sim::SimConfig::default())
            .await
            .expect("sim");
        let client = crate::engine::http::http_client();
        let base = sim.base_url();
        let ok = run_all(&client, &[preset("vllm", &base, None).expect("preset")])
            .await
            .expect("vLLM reset on the sim");
        assert!(ok.contains("\"success\":true"), "{ok}");
        // It serves SGLang's flush too.
        let ok = run_all(&client, &[preset("sglang", &base, None).expect("preset")])
            .await
            .expect("SGLang flush on the sim");
        assert!(ok.contains("Cache flushed"), "{ok}");
        // kvbench-sim has no llama.cpp slots: the answer says what the endpoint is for.
        let steps = [
            preset("llamacpp", &base, Some(0)).expect("preset"),
            preset("vllm", &base, None).expect("preset"),
        ];
        let err = run_all(&client, &steps).await.expect_err("404").to_string();
        assert!(err.contains("/slots/0") && err.contains("404"), "{err}");
        assert!(
            !err.contains("reset_prefix_cache"),
            "stopped at the first failure: {err}"
        );
        sim.stop().await;
    }
}
