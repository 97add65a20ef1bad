//! Loading and checking a per-scenario config file against its workload type.

use super::check_plan::read_yaml;
use super::error::{PlanError, PlanErrors};
use super::model::{
    ApiFlavor, Endpoint, OpenLoop, ScenarioConfig, DEFAULT_IDLE_TIMEOUT_S, DEFAULT_MODEL,
    DEFAULT_SEED, DEFAULT_TTFT_TIMEOUT_S,
};
use super::raw::RawConfig;
use crate::dataset::DatasetSpec;
use crate::load::Rate;
use crate::stats::{Goodput, StatsOptions, DEFAULT_PERCENTILES};
use crate::workload::{OutputDist, WorkloadKind, WorkloadParams, WorkloadSpec, MAX_OUTPUT_TOKENS};
use crate::yaml_index::YamlIndex;
use std::path::{Path, PathBuf};

/// Loads and validates one per-scenario config file for a workload type.
pub fn load_config(path: &Path, kind: WorkloadKind) -> Result<ScenarioConfig, PlanErrors> {
    let (index, raw): (YamlIndex, RawConfig) = read_yaml(path).map_err(|mut e| {
        // One struct holds every type's workload keys: name only this type's.
        if e.key.starts_with("workload.") && e.message.contains("valid keys here are") {
            e.message = format!(
                "`{kind}` does not use `{}`; its keys are: {}",
                e.key.trim_start_matches("workload."),
                WorkloadParams::accepted(kind).join(", ")
            );
        }
        e
    })?;
    let mut c = ConfigCheck {
        path,
        index: &index,
        errors: Vec::new(),
    };
    let endpoint = c.endpoint(&raw.endpoint);
    let num_requests = raw.num_requests.unwrap_or(kind.default_num_requests());
    if num_requests == 0 {
        c.err("num_requests", "must be at least 1".into());
    }
    let (output_tokens, output) = c.output(raw.output_tokens.as_ref(), kind);
    c.times(&raw);
    let open_loop = c.open_loop(&raw);
    let percentiles = c.percentiles(raw.percentiles.clone());
    if let Some(g) = &raw.goodput {
        c.goodput(g);
    }
    let dataset = raw.dataset.clone().map(|d| c.dataset(d));
    if dataset.is_some() && raw.workload.is_some() {
        c.err(
            "workload",
            "`workload` sizes shape generated requests; a `dataset` brings its own: remove one"
                .into(),
        );
    }
    let engine_tokenizer = raw.tokenizer.as_deref() == Some(Path::new("engine"));
    let tokenizer = raw
        .tokenizer
        .clone()
        .filter(|_| !engine_tokenizer)
        .map(|t| c.tokenizer(t));
    let params = raw.workload.unwrap_or_default();
    c.workload_keys(&params, kind);
    if !c.errors.is_empty() {
        return Err(PlanErrors(c.errors));
    }
    Ok(ScenarioConfig {
        endpoint,
        model: raw.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
        api: raw.api.unwrap_or(ApiFlavor::Chat),
        workload: WorkloadSpec {
            kind,
            seed: raw.seed.unwrap_or(DEFAULT_SEED),
            num_requests,
            output_tokens,
            output,
            params,
        },
        ttft_timeout_s: raw.ttft_timeout_s.unwrap_or(DEFAULT_TTFT_TIMEOUT_S),
        idle_timeout_s: raw.idle_timeout_s.unwrap_or(DEFAULT_IDLE_TIMEOUT_S),
        open_loop,
        duration_s: raw.duration_s,
        warmup_requests: raw.warmup_requests.unwrap_or(0),
        warmup_in_round_1: raw.warmup_in_round_1.unwrap_or(false),
        enforce_output_length: raw.enforce_output_length.unwrap_or(true),
        dataset,
        tokenizer,
        engine_tokenizer,
        stats: StatsOptions {
            percentiles,
            goodput: raw.goodput,
        },
    })
}

/// The checks of one scenario config file, each part on its own; every problem is
/// collected with the file, the line of its key and what would be valid.
pub(crate) struct ConfigCheck<'a> {
    pub(crate) path: &'a Path,
    pub(crate) index: &'a YamlIndex,
    pub(crate) errors: Vec<PlanError>,
}

pub(crate) fn positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

impl ConfigCheck<'_> {
    /// An error at the line of `key` (or of its nearest ancestor in the file).
    pub(crate) fn err(&mut self, key: &str, message: String) {
        self.err_at(key, self.index.line(key), message);
    }

    pub(crate) fn err_at(&mut self, key: &str, line: Option<usize>, message: String) {
        self.errors.push(PlanError {
            file: self.path.to_owned(),
            line,
            key: key.to_owned(),
            message,
        });
    }

    /// The line of `key` in the block `block:` (or of the block).
    pub(crate) fn line_in_block(&self, block: &str, key: &str) -> Option<usize> {
        self.index.line(&format!("{block}.{key}"))
    }

    pub(crate) fn endpoint(&mut self, raw: &str) -> Endpoint {
        match raw.trim() {
            "sim" => Endpoint::Sim,
            "agent" => Endpoint::Agent,
            u if u.starts_with("http://") && u.trim_end_matches('/').ends_with("/v1") => {
                self.err(
                    "endpoint",
                    format!("{u:?} ends in /v1, but kvbench adds /v1/chat/completions (or /v1/completions) itself: give the server's base URL, {:?}", u.trim_end_matches('/').trim_end_matches("/v1")),
                );
                Endpoint::Sim
            }
            u if u.starts_with("http://") => Endpoint::Url(u.trim_end_matches('/').to_owned()),
            u => {
                self.err(
                    "endpoint",
                    format!("must be `sim` (the embedded simulator) or an http:// base URL such as http://10.0.0.5:8000, got {u:?}"),
                );
                Endpoint::Sim
            }
        }
    }

    /// `output_tokens`: a number, or a distribution mapping.
    pub(crate) fn output(
        &mut self,
        raw: Option<&serde_yaml::Value>,
        kind: WorkloadKind,
    ) -> (u32, OutputDist) {
        match raw {
            None => (kind.default_output_tokens(), OutputDist::Fixed),
            Some(serde_yaml::Value::Number(n)) => match n.as_u64() {
                Some(v) if v >= 1 && v <= u64::from(MAX_OUTPUT_TOKENS) => {
                    (v as u32, OutputDist::Fixed)
                }
                _ => {
                    self.err("output_tokens", format!("must be a whole number of tokens from 1 to {MAX_OUTPUT_TOKENS}, got {n}"));
                    (1, OutputDist::Fixed)
                }
            },
            Some(v @ serde_yaml::Value::Mapping(_)) => self.distribution(v),
            Some(other) => {
                self.err(
                    "output_tokens",
                    format!(
                        "must be a number or a distribution mapping, got {}",
                        yaml_brief(other)
                    ),
                );
                (1, OutputDist::Fixed)
            }
        }
    }

    pub(crate) fn distribution(&mut self, v: &serde_yaml::Value) -> (u32, OutputDist) {
        match serde_yaml::from_value::<OutputDist>(v.clone()) {
            Ok(d) => {
                let bad = match d {
                    OutputDist::Fixed => Some("`fixed` takes a number: write `output_tokens: 64`".to_owned()),
                    OutputDist::Uniform { min, max } if min == 0 || max < min => {
                        Some(format!("uniform needs 1 <= min <= max, got min {min}, max {max}"))
                    }
                    OutputDist::Normal { mean, std } if !(mean >= 1.0 && std >= 0.0) => {
                        Some(format!("normal needs mean >= 1 and std >= 0, got mean {mean}, std {std}"))
                    }
                    OutputDist::Lognormal { mean, sigma } if !(mean >= 1.0 && sigma >= 0.0) => {
                        Some(format!("lognormal needs mean >= 1 and sigma >= 0, got mean {mean}, sigma {sigma}"))
                    }
                    _ => None,
                };
                if let Some(b) = bad {
                    self.err("output_tokens", b);
                }
                (d.mean(1).round().max(1.0) as u32, d)
            }
            Err(e) => {
                self.err(
                    "output_tokens",
                    format!("{e}; write a number, or a mapping such as {{distribution: uniform, min: 32, max: 256}} (distributions: uniform {{min, max}}, normal {{mean, std}}, lognormal {{mean, sigma}})"),
                );
                (1, OutputDist::Fixed)
            }
        }
    }

    /// Timeouts and `duration_s`: seconds > 0.
    pub(crate) fn times(&mut self, raw: &RawConfig) {
        for (k, v) in [
            ("ttft_timeout_s", raw.ttft_timeout_s),
            ("idle_timeout_s", raw.idle_timeout_s),
            ("duration_s", raw.duration_s),
        ] {
            if let Some(v) = v.filter(|v| !positive(*v)) {
                self.err(k, format!("must be a number of seconds > 0, got {v}"));
            }
        }
    }

    /// `request_rate`: requests/s, or `inf` (all at once).
    pub(crate) fn rate(&mut self, raw: Option<&serde_yaml::Value>) -> Option<f64> {
        match raw? {
            serde_yaml::Value::Number(n) => match n.as_f64() {
                Some(r) if r > 0.0 => Some(r),
                _ => {
                    self.err(
                        "request_rate",
                        format!("must be > 0 requests/s or `inf`, got {n}"),
                    );
                    None
                }
            },
            serde_yaml::Value::String(t)
                if ["inf", "infinity", ".inf"].contains(&t.to_ascii_lowercase().as_str()) =>
            {
                Some(f64::INFINITY)
            }
            other => {
                self.err(
                    "request_rate",
                    format!(
                        "must be a number of requests/s or `inf` (all at once), got {}",
                        yaml_brief(other)
                    ),
                );
                None
            }
        }
    }

    /// The open loop of `request_rate` or `ramp_up` (none: a closed loop).
    pub(crate) fn open_loop(&mut self, raw: &RawConfig) -> Option<OpenLoop> {
        let rate = self.rate(raw.request_rate.as_ref());
        let burstiness = raw.burstiness.unwrap_or(1.0);
        if !positive(burstiness) {
            self.err(
                "burstiness",
                format!("must be > 0 (1.0 = Poisson), got {burstiness}"),
            );
        }
        let ramp = raw.ramp_up.as_ref().map(|r| {
            for (k, v) in [("start_rate", r.start_rate), ("end_rate", r.end_rate)] {
                if !positive(v) {
                    self.err(
                        &format!("ramp_up.{k}"),
                        format!("must be a rate > 0 requests/s, got {v}"),
                    );
                }
            }
            Rate::Ramp {
                strategy: r.strategy,
                start: r.start_rate,
                end: r.end_rate,
            }
        });
        if rate.is_some() && ramp.is_some() {
            self.err(
                "ramp_up",
                "give either `request_rate` or `ramp_up`, not both".into(),
            );
        }
        if raw.max_concurrency == Some(0) {
            self.err("max_concurrency", "must be at least 1".into());
        }
        let rate = match (rate, ramp) {
            (Some(r), _) => Rate::Fixed(r),
            (None, Some(r)) => r,
            (None, None) => {
                for (k, set) in [
                    ("max_concurrency", raw.max_concurrency.is_some()),
                    ("burstiness", raw.burstiness.is_some()),
                ] {
                    if set {
                        self.err(k, format!("`{k}` shapes an open loop: set `request_rate` or `ramp_up` too (a closed loop takes the plan's `concurrency`)"));
                    }
                }
                return None;
            }
        };
        Some(OpenLoop {
            rate,
            burstiness,
            max_concurrency: raw.max_concurrency,
        })
    }

    pub(crate) fn percentiles(&mut self, raw: Option<Vec<f64>>) -> Vec<f64> {
        let percentiles = raw.unwrap_or_else(|| DEFAULT_PERCENTILES.to_vec());
        if percentiles.is_empty()
            || percentiles
                .iter()
                .any(|p| !(p.is_finite() && *p > 0.0 && *p < 100.0))
        {
            self.err(
                "percentiles",
                format!(
                    "must be a list of numbers strictly between 0 and 100, got {percentiles:?}"
                ),
            );
        }
        percentiles
    }

    pub(crate) fn goodput(&mut self, g: &Goodput) {
        for (k, v) in [
            ("ttft_ms", g.ttft_ms),
            ("tpot_ms", g.tpot_ms),
            ("e2el_ms", g.e2el_ms),
        ] {
            if let Some(v) = v.filter(|v| !positive(*v)) {
                self.err(
                    &format!("goodput.{k}"),
                    format!("must be a number of milliseconds > 0, got {v}"),
                );
            }
        }
        if g.ttft_ms.is_none() && g.tpot_ms.is_none() && g.e2el_ms.is_none() {
            self.err(
                "goodput",
                "set at least one of ttft_ms, tpot_ms, e2el_ms".into(),
            );
        }
    }

    /// A path of this file, resolved against its folder.
    pub(crate) fn resolve(&self, p: PathBuf) -> PathBuf {
        if p.is_relative() {
            self.path.parent().map(|b| b.join(&p)).unwrap_or(p)
        } else {
            p
        }
    }

    pub(crate) fn dataset(&mut self, mut d: DatasetSpec) -> DatasetSpec {
        d.path = self.resolve(d.path);
        if !d.path.is_file() {
            let line = self.line_in_block("dataset", "path");
            self.err_at(
                "dataset.path",
                line,
                format!(
                    "dataset file {} not found; paths resolve against this file's folder",
                    d.path.display()
                ),
            );
        }
        if !positive(d.speedup) {
            let line = self.line_in_block("dataset", "speedup");
            self.err_at(
                "dataset.speedup",
                line,
                format!("must be > 0, got {}", d.speedup),
            );
        }
        d
    }

    pub(crate) fn tokenizer(&mut self, t: PathBuf) -> PathBuf {
        let t = self.resolve(t);
        if !t.is_file() {
            self.err(
                "tokenizer",
                format!("tokenizer file {} not found (a Hugging Face tokenizer.json, paths resolving against this file's folder; or `engine`: the engine's own /tokenize)", t.display()),
            );
        }
        t
    }

    /// Each workload type accepts only its own keys.
    pub(crate) fn workload_keys(&mut self, params: &WorkloadParams, kind: WorkloadKind) {
        let accepted = WorkloadParams::accepted(kind);
        for f in params.set_fields() {
            if !accepted.contains(&f) {
                let line = self.line_in_block("workload", f);
                self.err_at(
                    &format!("workload.{f}"),
                    line,
                    format!(
                        "`{kind}` does not use `{f}`; its keys are: {}",
                        accepted.join(", ")
                    ),
                );
            }
        }
    }
}

pub(crate) fn yaml_brief(v: &serde_yaml::Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim().chars().take(60).collect())
        .unwrap_or_else(|_| "?".into())
}
