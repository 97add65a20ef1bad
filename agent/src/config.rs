//! The agent's own config file (`kvbench-agent --config agent.yaml`): the engine it serves
//! and what clearing its caches means on this host. Nothing that arrives over gRPC can name
//! a URL, a path or a command: only this file does.
//!
//! ```yaml
//! name: gpu-node-1                 # default: the hostname
//! listen: 127.0.0.1:50051          # default: --listen
//! labels: {cloud: a, region: eu}   # reported to the coordinator
//! engine:
//!   kind: vllm                     # vllm | sglang | llamacpp | sim | generic
//!   base_url: http://127.0.0.1:8000
//!   slot: 0                        # llama.cpp: erase only this slot (default: every slot)
//!   metrics_url: http://127.0.0.1:8000/metrics   # default: base_url + /metrics
//!   health_url: http://127.0.0.1:8000/health     # default: base_url + /health
//!   model: Qwen2.5-72B-Instruct    # what /v1/models must list after a restart
//! clear_cache:                     # default: the engine kind's preset (none for generic)
//!   - preset: vllm                 # vllm | sim | sglang | llamacpp (against base_url)
//!   - preset: mooncake_master      # lmcache | mooncake_master: give their url
//!     url: http://10.0.0.2:9003
//!   - name: my cache               # or a call written out
//!     method: POST
//!     url: http://127.0.0.1:9100/clear
//!     body: '{"all": true}'
//!     success_field: success       # a JSON boolean of the answer that must be true
//!     retry_statuses: [409]        # "busy": retried for 10 s
//! restart_engine:                  # optional: what RestartEngine does
//!   systemd_unit: vllm.service     # systemctl restart UNIT; or argv: [...] (hosts without systemd)
//!   model: Qwen2.5-72B-Instruct    # /v1/models must list it before the restart counts as done
//!   timeout_s: 600                 # else restart_timeout
//! on_engine_failure: report        # the engine goes down mid-round: report (the round goes on,
//!                                  # its requests fail as they do) | restart (stop the round's
//!                                  # load, restart_engine, the scenario reruns from round 1)
//! tls:                             # serve gRPC over TLS (required beyond loopback)
//!   cert_file: /etc/kvbench-agent/agent.pem   # this agent's certificate (chain), re-read when it changes
//!   key_file: /etc/kvbench-agent/agent.key
//!   client_ca_file: /etc/kvbench-agent/ca.pem # accept only clients whose certificate this CA signed
//! token_file: /etc/kvbench-agent/token   # or token_env: KVBENCH_AGENT_TOKEN; a bearer token clients must present
//! allow_restart: true              # false: RestartEngine is refused (PERMISSION_DENIED)
//! allow_clear: true                # false: ClearCache is refused
//! limits:                          # lower kvbench's built-in limits for this host
//!   max_requests: 100000           # requests per round (warmups included)
//!   max_concurrency: 512           # requests in flight
//!   max_duration_s: 3600           # a round's duration_s
//! metrics_listen: 127.0.0.1:9464   # the agent's own Prometheus metrics (off by default)
//! state_dir: /var/lib/kvbench-agent  # where a round's unacknowledged records spill past
//!                                  # 16384 events (default: $STATE_DIRECTORY, else /tmp/kvbench-agent)
//! telemetry:                       # all optional; these are the defaults
//!   gpu: true                      # sample GPUs through NVML (where the driver is)
//!   gpu_interval_ms: 100           # 10 Hz
//!   host: true                     # CPU, memory, network (sysinfo)
//!   host_interval_ms: 1000
//!   engine_metrics: true           # the engine's /metrics
//!   engine_metrics_interval_ms: 1000
//!   lmcache_metrics_url: http://127.0.0.1:7001/metrics   # scraped with the engine's (default: none;
//!                                  # LMCache inside vLLM shows on vLLM's /metrics already)
//!   mooncake_metrics_url: http://10.0.0.2:9003/metrics   # the Mooncake master's (default: none)
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use kvbench_common::plan::{read_yaml, PlanError, PlanErrors};
use kvbench_common::yaml_index::YamlIndex;
use serde::Deserialize;

use crate::engine::clear::{preset, ClearStep, PRESETS};
use crate::telemetry::{GpuChoice, TelemetryConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    Vllm,
    Sglang,
    Llamacpp,
    Sim,
    Generic,
}

impl EngineKind {
    /// As the config file names it.
    pub fn label(self) -> &'static str {
        match self {
            EngineKind::Vllm => "vllm",
            EngineKind::Sglang => "sglang",
            EngineKind::Llamacpp => "llamacpp",
            EngineKind::Sim => "sim",
            EngineKind::Generic => "generic",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    listen: Option<SocketAddr>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    engine: RawEngine,
    #[serde(default)]
    clear_cache: Option<Vec<RawClear>>,
    #[serde(default)]
    restart_engine: Option<Restart>,
    #[serde(default)]
    on_engine_failure: Option<OnEngineFailure>,
    #[serde(default)]
    telemetry: Option<RawTelemetry>,
    #[serde(default)]
    scheduling: Option<Scheduling>,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default)]
    token_file: Option<std::path::PathBuf>,
    #[serde(default)]
    token_env: Option<String>,
    #[serde(default)]
    allow_restart: Option<bool>,
    #[serde(default)]
    allow_clear: Option<bool>,
    #[serde(default)]
    limits: Option<RawLimits>,
    #[serde(default)]
    metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    state_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
    #[serde(default)]
    client_ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    max_requests: Option<u32>,
    #[serde(default)]
    max_concurrency: Option<u32>,
    #[serde(default)]
    max_duration_s: Option<f64>,
}

/// The agent's TLS files (`tls:`), re-read when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
    /// None: no client certificate asked for (a token is then required).
    pub client_ca_file: Option<std::path::PathBuf>,
}

/// What a client may ask of this host (`limits:`): kvbench's built-in limits, or lower.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostLimits {
    pub max_requests: u32,
    pub max_concurrency: u32,
    /// None: no limit on a round's `duration_s` but kvbench's.
    pub max_duration_s: f64,
}

impl Default for HostLimits {
    fn default() -> Self {
        HostLimits {
            max_requests: kvbench_common::limits::MAX_REQUESTS,
            max_concurrency: kvbench_common::limits::MAX_IN_FLIGHT,
            max_duration_s: kvbench_common::limits::MAX_SECONDS,
        }
    }
}

/// Who may connect and what they may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub tls: Option<TlsFiles>,
    pub token: Option<kvbench_common::auth::TokenSource>,
    pub allow_restart: bool,
    pub allow_clear: bool,
    pub limits: HostLimits,
}

impl Default for Access {
    /// Loopback's defaults: no TLS, no token, every command allowed, kvbench's limits.
    fn default() -> Self {
        Access {
            tls: None,
            token: None,
            allow_restart: true,
            allow_clear: true,
            limits: HostLimits::default(),
        }
    }
}

/// The agent's own priority and CPUs (`scheduling:`), applied at start to all its threads:
/// with the engine on the same cores, a raised priority keeps the agent's clock on time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scheduling {
    /// -20 (first) to 19 (last); below the current value needs root or CAP_SYS_NICE.
    #[serde(default)]
    pub nice: Option<i32>,
    /// The CPUs (numbers as the kernel counts them) the agent may run on.
    #[serde(default)]
    pub cpus: Option<Vec<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    #[serde(default)]
    gpu: Option<bool>,
    #[serde(default)]
    host: Option<bool>,
    #[serde(default)]
    engine_metrics: Option<bool>,
    #[serde(default)]
    gpu_interval_ms: Option<f64>,
    #[serde(default)]
    host_interval_ms: Option<f64>,
    #[serde(default)]
    engine_metrics_interval_ms: Option<f64>,
    #[serde(default)]
    lmcache_metrics_url: Option<String>,
    #[serde(default)]
    mooncake_metrics_url: Option<String>,
}

/// What the agent does when its engine goes down mid-round (`on_engine_failure:`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnEngineFailure {
    /// Tell the coordinator; the round goes on and its requests fail as they do.
    #[default]
    Report,
    /// Tell the coordinator, stop the round's load, restart the engine (`restart_engine:`);
    /// the coordinator reruns the scenario from round 1.
    Restart,
}

/// How the agent restarts its engine: `systemctl restart UNIT`, or a command of its own
/// (hosts without systemd, and tests); then it waits for health.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    #[serde(default)]
    pub systemd_unit: Option<String>,
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    /// The model `/v1/models` must list once the engine is back.
    #[serde(default)]
    pub model: Option<String>,
    /// Seconds to wait for health after the command (default 600).
    #[serde(default)]
    pub timeout_s: Option<f64>,
}

impl Restart {
    /// The command to run.
    pub fn command(&self) -> Vec<String> {
        match (&self.systemd_unit, &self.argv) {
            (_, Some(argv)) => argv.clone(),
            (Some(unit), None) => vec!["systemctl".into(), "restart".into(), unit.clone()],
            (None, None) => Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    kind: EngineKind,
    base_url: String,
    #[serde(default)]
    slot: Option<u32>,
    #[serde(default)]
    metrics_url: Option<String>,
    #[serde(default)]
    health_url: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClear {
    #[serde(default)]
    preset: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    success_field: Option<String>,
    #[serde(default)]
    retry_statuses: Option<Vec<u16>>,
}

/// A validated agent config file.
#[derive(Debug, Clone)]
pub struct AgentFile {
    pub name: Option<String>,
    pub listen: Option<SocketAddr>,
    pub labels: BTreeMap<String, String>,
    pub engine_kind: EngineKind,
    pub engine_url: String,
    pub metrics_url: String,
    pub health_url: String,
    pub model: Option<String>,
    pub clear_steps: Vec<ClearStep>,
    pub restart: Option<Restart>,
    pub on_engine_failure: OnEngineFailure,
    pub telemetry: TelemetryConfig,
    pub scheduling: Scheduling,
    pub access: Access,
    pub metrics_listen: Option<SocketAddr>,
    /// Where a round's unacknowledged events spill (relative: to the file's folder).
    pub state_dir: Option<std::path::PathBuf>,
}

/// Loads and checks an agent config file; errors name the file, the line and the key.
pub fn load(path: &Path) -> Result<AgentFile, PlanErrors> {
    let (index, raw): (YamlIndex, RawFile) = read_yaml(path)?;
    let mut c = FileCheck {
        path,
        index: &index,
        errors: Vec::new(),
    };
    let access = c.access(&raw, path.parent().unwrap_or(Path::new(".")));
    let base = raw.engine.base_url.trim_end_matches('/').to_owned();
    c.url("base_url", Some(base.clone()), String::new());
    let metrics_url = c.url(
        "metrics_url",
        raw.engine.metrics_url,
        format!("{base}/metrics"),
    );
    let health_url = c.url(
        "health_url",
        raw.engine.health_url,
        format!("{base}/health"),
    );
    let telemetry = raw.telemetry.map(|t| c.telemetry(t)).unwrap_or_default();
    let slot = raw.engine.slot;
    let clear_steps = match raw.clear_cache {
        None => {
            let name = match raw.engine.kind {
                EngineKind::Vllm => Some("vllm"),
                EngineKind::Sim => Some("sim"),
                EngineKind::Sglang => Some("sglang"),
                EngineKind::Llamacpp => Some("llamacpp"),
                EngineKind::Generic => None,
            };
            name.and_then(|n| preset(n, &base, slot))
                .into_iter()
                .collect()
        }
        Some(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| c.clear_step(i, item, &base, slot))
            .collect(),
    };
    if let Some(r) = &raw.restart_engine {
        c.restart(r);
    }
    let on_engine_failure = raw.on_engine_failure.unwrap_or_default();
    if on_engine_failure == OnEngineFailure::Restart && raw.restart_engine.is_none() {
        c.err(
            "on_engine_failure".into(),
            "restart needs a restart_engine section saying how (systemd_unit or argv); or use report".into(),
        );
    }
    let scheduling = raw.scheduling.unwrap_or_default();
    if let Some(n) = scheduling.nice.filter(|n| !(-20..=19).contains(n)) {
        c.err(
            "scheduling.nice".into(),
            format!("must be from -20 (highest priority) to 19, got {n}"),
        );
    }
    match &scheduling.cpus {
        Some(cpus) if cpus.is_empty() => c.err(
            "scheduling.cpus".into(),
            "must list at least one CPU (leave it out for any)".into(),
        ),
        Some(cpus) if cpus.iter().any(|c| *c >= 1024) => c.err(
            "scheduling.cpus".into(),
            format!("CPU numbers go from 0 to 1023, got {cpus:?}"),
        ),
        _ => {}
    }
    if !c.errors.is_empty() {
        return Err(PlanErrors(c.errors));
    }
    Ok(AgentFile {
        access,
        metrics_listen: raw.metrics_listen,
        state_dir: raw
            .state_dir
            .map(|d| path.parent().unwrap_or(Path::new(".")).join(d)),
        restart: raw.restart_engine,
        on_engine_failure,
        name: raw.name,
        listen: raw.listen,
        labels: raw.labels,
        engine_kind: raw.engine.kind,
        engine_url: base,
        metrics_url,
        health_url,
        model: raw.engine.model,
        clear_steps,
        telemetry,
        scheduling,
    })
}

/// The checks of an agent config file, each error collected with the file, the line of its
/// key and what would be valid.
struct FileCheck<'a> {
    path: &'a Path,
    index: &'a YamlIndex,
    errors: Vec<PlanError>,
}

impl FileCheck<'_> {
    /// An error named `key`, at the line of `at` (a path, or its nearest ancestor).
    fn err_at(&mut self, key: String, at: &str, message: String) {
        self.errors.push(PlanError {
            file: self.path.to_owned(),
            line: self.index.line(at),
            key,
            message,
        });
    }

    fn err(&mut self, key: String, message: String) {
        let at = key.clone();
        self.err_at(key, &at, message);
    }

    /// `engine.<key>`, or its default; it must be an http:// URL.
    fn url(&mut self, key: &str, value: Option<String>, default: String) -> String {
        let v = value.unwrap_or(default);
        if !v.starts_with("http://") {
            self.err(
                format!("engine.{key}"),
                format!("must be an http:// URL, got {v:?}"),
            );
        }
        v
    }

    fn telemetry(&mut self, t: RawTelemetry) -> TelemetryConfig {
        let mut telemetry = TelemetryConfig::default();
        if t.gpu == Some(false) {
            telemetry.gpu = GpuChoice::Off;
        }
        telemetry.host = t.host.unwrap_or(true);
        telemetry.engine_metrics = t.engine_metrics.unwrap_or(true);
        let periods = [
            (
                "gpu_interval_ms",
                t.gpu_interval_ms,
                &mut telemetry.gpu_interval,
            ),
            (
                "host_interval_ms",
                t.host_interval_ms,
                &mut telemetry.host_interval,
            ),
            (
                "engine_metrics_interval_ms",
                t.engine_metrics_interval_ms,
                &mut telemetry.engine_metrics_interval,
            ),
        ];
        for (key, value, into) in periods {
            let Some(ms) = value else { continue };
            if ms.is_finite() && (10.0..=3_600_000.0).contains(&ms) {
                *into = Duration::from_secs_f64(ms / 1000.0);
            } else {
                self.err(
                    format!("telemetry.{key}"),
                    format!("must be a number of milliseconds from 10 to 3600000, got {ms}"),
                );
            }
        }
        for (store, url) in [
            ("lmcache", t.lmcache_metrics_url),
            ("mooncake", t.mooncake_metrics_url),
        ] {
            let Some(url) = url else { continue };
            if url.starts_with("http://") || url.starts_with("https://") {
                telemetry.store_metrics.push((store.to_owned(), url));
            } else {
                self.err(
                    format!("telemetry.{store}_metrics_url"),
                    format!("must be an http:// or https:// URL (the store's Prometheus metrics), got {url:?}"),
                );
            }
        }
        telemetry
    }

    /// Item `i` of `clear_cache`: a preset (against the engine, or a store at its `url`) or
    /// a request of the user's own.
    fn clear_step(
        &mut self,
        i: usize,
        c: RawClear,
        base: &str,
        slot: Option<u32>,
    ) -> Option<ClearStep> {
        let item = format!("clear_cache[{i}]");
        let key = |k: &str| format!("clear_cache[{i}].{k}");
        match (&c.preset, &c.method, &c.url) {
            (Some(p), None, url) => {
                let service = matches!(p.as_str(), "lmcache" | "mooncake_master");
                let target = match (service, url) {
                    (true, Some(u)) => u.clone(),
                    (true, None) => {
                        self.err_at(key("url"), &item, format!("the `{p}` preset needs the service's url (LMCache controller :9000, Mooncake master :9003)"));
                        return None;
                    }
                    (false, Some(_)) => {
                        self.err_at(
                            key("url"),
                            &item,
                            format!(
                                "the `{p}` preset clears the engine at engine.base_url; drop `url`"
                            ),
                        );
                        return None;
                    }
                    (false, None) => base.to_owned(),
                };
                let Some(mut s) = preset(p, &target, slot) else {
                    self.err_at(
                        key("preset"),
                        &item,
                        format!(
                            "unknown preset {p:?}; valid presets: {}",
                            PRESETS.join(", ")
                        ),
                    );
                    return None;
                };
                if let Some(b) = c.body {
                    s.body = Some(b);
                }
                Some(s)
            }
            (None, Some(m), Some(u)) => Some(ClearStep {
                name: c.name.unwrap_or_else(|| format!("{m} {u}")),
                method: m.to_ascii_uppercase(),
                url: u.clone(),
                body: c.body,
                success_field: c.success_field,
                retry_statuses: c.retry_statuses.unwrap_or_default(),
                missing_hint: None,
                advisory: false,
                each_slot: None,
            }),
            _ => {
                self.err(
                    item,
                    "give either `preset` (with `url` for lmcache and mooncake_master) or `method` and `url`".into(),
                );
                None
            }
        }
    }

    /// `tls:`, `token_file`/`token_env`, `allow_*` and `limits:`: every file read now, so
    /// that a bad one is an error at start, naming its key.
    fn access(&mut self, raw: &RawFile, dir: &Path) -> Access {
        use kvbench_common::auth::TokenSource;
        use kvbench_common::tls;
        let at = |p: &std::path::PathBuf| {
            if p.is_relative() {
                dir.join(p)
            } else {
                p.clone()
            }
        };
        let tls = raw.tls.as_ref().map(|t| TlsFiles {
            cert_file: at(&t.cert_file),
            key_file: at(&t.key_file),
            client_ca_file: t.client_ca_file.as_ref().map(at),
        });
        if let Some(t) = &tls {
            if let Err(e) = tls::load_certs(&t.cert_file) {
                self.err("tls.cert_file".into(), e.to_string());
            }
            if let Err(e) = tls::load_key(&t.key_file) {
                self.err("tls.key_file".into(), e.to_string());
            }
            if let Some(ca) = &t.client_ca_file {
                if let Err(e) = tls::load_roots(ca) {
                    self.err("tls.client_ca_file".into(), e.to_string());
                }
            }
        }
        let token = match (&raw.token_file, &raw.token_env) {
            (Some(_), Some(_)) => {
                self.err(
                    "token_file".into(),
                    "give one of `token_file` and `token_env`, not both".into(),
                );
                None
            }
            (Some(f), None) => Some(("token_file", TokenSource::File(at(f)))),
            (None, Some(v)) => Some(("token_env", TokenSource::Env(v.clone()))),
            (None, None) => None,
        };
        if let Some((key, source)) = &token {
            if let Err(e) = source.read() {
                self.err((*key).into(), e.to_string());
            }
        }
        if let Some(t) = &tls {
            if t.client_ca_file.is_none() && token.is_none() {
                self.err(
                    "tls.client_ca_file".into(),
                    "without client_ca_file any client could connect: give client_ca_file (mutual TLS), or a token (token_file or token_env), or both".into(),
                );
            }
        }
        let mut limits = HostLimits::default();
        if let Some(l) = &raw.limits {
            let built_in = HostLimits::default();
            if let Some(n) = l.max_requests {
                if n == 0 || n > built_in.max_requests {
                    self.err(
                        "limits.max_requests".into(),
                        format!(
                            "must be from 1 to {} (kvbench's limit), got {n}",
                            built_in.max_requests
                        ),
                    );
                }
                limits.max_requests = n;
            }
            if let Some(n) = l.max_concurrency {
                if n == 0 || n > built_in.max_concurrency {
                    self.err(
                        "limits.max_concurrency".into(),
                        format!(
                            "must be from 1 to {} (kvbench's limit), got {n}",
                            built_in.max_concurrency
                        ),
                    );
                }
                limits.max_concurrency = n;
            }
            if let Some(s) = l.max_duration_s {
                if !(s.is_finite() && s > 0.0 && s <= built_in.max_duration_s) {
                    self.err(
                        "limits.max_duration_s".into(),
                        format!(
                            "must be a number of seconds from 1 to {} (kvbench's limit), got {s}",
                            built_in.max_duration_s
                        ),
                    );
                }
                limits.max_duration_s = s;
            }
        }
        Access {
            tls,
            token: token.map(|(_, s)| s),
            allow_restart: raw.allow_restart.unwrap_or(true),
            allow_clear: raw.allow_clear.unwrap_or(true),
            limits,
        }
    }

    fn restart(&mut self, r: &Restart) {
        let n = usize::from(r.systemd_unit.is_some()) + usize::from(r.argv.is_some());
        if n != 1 || r.argv.as_ref().is_some_and(Vec::is_empty) {
            self.err(
                "restart_engine".into(),
                "give exactly one of `systemd_unit` and a non-empty `argv`".into(),
            );
        }
        if r.timeout_s.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
            self.err(
                "restart_engine.timeout_s".into(),
                "must be a number of seconds > 0".into(),
            );
        }
    }
}
