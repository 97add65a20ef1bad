//! Loading and checking a plan file: its keys, its scenarios and the agents they run on.

use super::check_config::load_config;
use super::error::{line_of, yaml_error, PlanError, PlanErrors};
use super::model::{
    labels_from_name, repeated, searched, swept, Endpoint, IsolationPolicy, Plan, Scenario,
    SearchSpec, SweepDimension, DEFAULT_MAX_ERROR_RATE, DEFAULT_OUTPUT_DIR, DEFAULT_ROUNDS,
    DEFAULT_SEARCH_POINTS, DEFAULT_WAIT_S, MAX_REPEATS, MAX_SEARCH_POINTS, MAX_SWEEP_POINTS,
};
use super::raw::{
    AgentSpec, ClientTls, Placement, RawAgent, RawClientTls, RawPlan, RawScenario, RawTargets,
};
use crate::util::slug;
use crate::yaml_index::YamlIndex;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Reads a YAML file into a raw type: the positions of its keys and its value, or an
/// error naming the file, the line and the key. Every YAML file kvbench reads comes in here.
pub fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(YamlIndex, T), PlanError> {
    let text = std::fs::read_to_string(path).map_err(|e| PlanError {
        file: path.to_owned(),
        line: None,
        key: String::new(),
        message: format!("cannot read the file: {e}"),
    })?;
    let value = serde_yaml::from_str(&text).map_err(|e| yaml_error(path, &text, &e))?;
    Ok((YamlIndex::of(&text), value))
}

/// A limit error of a scenario config file, at the line of its key.
pub(crate) fn config_error(path: &Path, e: &crate::limits::LimitError) -> PlanError {
    PlanError {
        file: path.to_owned(),
        line: line_of(path, &e.field),
        key: e.field.clone(),
        message: e.message.clone(),
    }
}

/// Loads and validates a plan and every config file it names. Relative paths in the plan
/// resolve against the plan file's folder.
pub fn load(path: &Path) -> Result<Plan, PlanErrors> {
    let (index, raw): (YamlIndex, RawPlan) = read_yaml(path)?;
    let mut c = PlanCheck {
        path,
        base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        index: &index,
        errors: Vec::new(),
    };
    let wait = c.wait(raw.wait_between_scenarios);
    let max_error_rate = c.max_error_rate(raw.max_error_rate);
    let reconnect_window = c.reconnect_window(raw.reconnect_window_s);
    if raw.test_scenarios.is_empty() {
        c.err("test_scenarios", "must list at least one scenario".into());
    }
    let output_dir = resolve(
        &c.base,
        raw.output_dir.as_deref().unwrap_or(DEFAULT_OUTPUT_DIR),
    );
    let mooncake_metadata_server_url = raw.mooncake.and_then(|m| m.metadata_server_url);
    if let Some(url) = &mooncake_metadata_server_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            c.err(
                "mooncake.metadata_server_url",
                format!("must be an http:// or https:// URL, got {url:?}"),
            );
        }
    }
    let agent_config = c.agent_config(raw.agent_config.as_deref());

    let agents = c.agents(
        raw.agents.unwrap_or_default(),
        raw.tls.as_ref(),
        (raw.token_file.as_deref(), raw.token_env.as_deref()),
    );
    let targets = c.targets("targets", raw.targets.unwrap_or_default());
    let mut scenarios = Vec::new();
    let mut slugs = BTreeSet::new();
    // (index in `scenarios`, index in the plan's test_scenarios)
    let mut bases: Vec<(usize, usize)> = Vec::new();
    for (i, mut s) in raw.test_scenarios.into_iter().enumerate() {
        let placed = c.placement(i, &s, &agents);
        let own = c.targets(
            &format!("test_scenarios[{i}].targets"),
            s.targets.take().unwrap_or_default(),
        );
        let repeats = c.repeats(i, s.repeats);
        let sweep = c.sweep(i, &s);
        let search = c.search(i, &mut s, repeats);
        let slo = c.slo(i, s.slo.take(), sweep.is_some() || search.is_some());
        let Some(mut scenario) = c.scenario(i, s) else {
            continue;
        };
        scenario.targets = crate::targets::merged(&targets, &own);
        if let Some(sw) = &sweep {
            c.sweep_fits(i, &scenario, sw, "sweep");
        }
        if let Some((dimension, spec)) = &search {
            c.sweep_fits(i, &scenario, &(*dimension, spec.between.to_vec()), "search");
        }
        let first = scenarios.len();
        let placed_runs = c.expand(i, scenario, placed);
        let points: Vec<Scenario> = placed_runs
            .into_iter()
            .flat_map(|sc| match &search {
                Some((dimension, spec)) => searched(sc, *dimension, spec, &slo),
                None => swept(sc, sweep.as_ref(), &slo),
            })
            .collect();
        for sc in &points {
            if sc.sweep.is_some() {
                c.point_limits(i, sc);
            }
        }
        for sc in points.into_iter().flat_map(|sc| repeated(sc, repeats)) {
            if !sc.name.is_empty() && !slugs.insert(sc.slug.clone()) {
                c.err(
                    &format!("test_scenarios[{i}].name"),
                    format!("{:?} gives the same file names as an earlier scenario ({}); give each scenario a distinct name", sc.name, sc.slug),
                );
            }
            scenarios.push(sc);
        }
        bases.extend((first..scenarios.len()).map(|j| (j, i)));
    }
    c.baselines(&mut scenarios, &bases);
    // A swept scenario's capacity is compared with its baseline's, as swept.
    for j in 0..scenarios.len() {
        let of_baseline = scenarios[j].baseline.as_ref().and_then(|b| {
            let base = scenarios.iter().find(|s| &s.name == b)?;
            Some(base.sweep.as_ref()?.scenario.clone())
        });
        if let Some(p) = scenarios[j].sweep.as_mut() {
            p.baseline = of_baseline;
        }
    }
    if !c.errors.is_empty() {
        return Err(PlanErrors(c.errors));
    }
    Ok(Plan {
        path: path.to_owned(),
        output_dir,
        clear_cache_between_scenarios: raw.clear_cache_between_scenarios.unwrap_or(true),
        isolation: raw
            .isolation
            .unwrap_or(match raw.clear_cache_between_scenarios {
                Some(false) => IsolationPolicy::Wait,
                _ => IsolationPolicy::Clear,
            }),
        isolate_before_first: raw.isolate_before_first.unwrap_or(false),
        wait_between_scenarios_s: wait,
        mooncake_metadata_server_url,
        agent_config,
        max_error_rate,
        reconnect_window,
        agents,
        targets,
        scenarios,
    })
}

/// The checks of a plan file, each error collected with the file, the line of its key and
/// what would be valid.
pub(crate) struct PlanCheck<'a> {
    pub(crate) path: &'a Path,
    /// The plan's folder: relative paths resolve against it.
    pub(crate) base: PathBuf,
    pub(crate) index: &'a YamlIndex,
    pub(crate) errors: Vec<PlanError>,
}

impl PlanCheck<'_> {
    /// An error at the line of `key` (a path such as `test_scenarios[2].rounds`).
    pub(crate) fn err(&mut self, key: &str, message: String) {
        self.errors.push(PlanError {
            file: self.path.to_owned(),
            line: self.index.line(key),
            key: key.to_owned(),
            message,
        });
    }

    /// The targets under `key`, each `figure: "op value"`.
    pub(crate) fn targets(&mut self, key: &str, raw: RawTargets) -> Vec<crate::targets::Target> {
        let mut out = Vec::new();
        for (metric, v) in raw {
            let at = format!("{key}.{metric}");
            let condition = match v {
                serde_yaml::Value::String(s) => s,
                other => {
                    let shown = serde_yaml::to_string(&other).unwrap_or_default();
                    self.err(
                        &at,
                        format!(
                            "must be a condition with its operator, as \">= 50\" or \"<= {}\" (quoted), got {}",
                            shown.trim(),
                            shown.trim()
                        ),
                    );
                    continue;
                }
            };
            match crate::targets::Target::parse(&metric, &condition) {
                Ok(t) => out.push(t),
                Err(e) => self.err(&at, e.to_string()),
            }
        }
        out
    }

    pub(crate) fn wait(&mut self, raw: Option<f64>) -> f64 {
        let wait = raw.unwrap_or(DEFAULT_WAIT_S);
        if !(wait.is_finite() && wait >= 0.0) {
            self.err(
                "wait_between_scenarios",
                format!("must be a number of seconds >= 0, got {wait}"),
            );
        }
        wait
    }

    pub(crate) fn max_error_rate(&mut self, raw: Option<f64>) -> f64 {
        let rate = raw.unwrap_or(DEFAULT_MAX_ERROR_RATE);
        if !(0.0..=1.0).contains(&rate) {
            self.err(
                "max_error_rate",
                format!("must be a share of requests between 0 and 1 (0.05 = 5 %), got {rate}"),
            );
        }
        rate
    }

    pub(crate) fn reconnect_window(&mut self, raw: Option<f64>) -> std::time::Duration {
        let default = crate::agent::DEFAULT_RECONNECT_WINDOW;
        match raw {
            None => default,
            Some(s) if s.is_finite() && (1.0..=86_400.0).contains(&s) => {
                std::time::Duration::from_secs_f64(s)
            }
            Some(s) => {
                self.err(
                    "reconnect_window_s",
                    format!("must be seconds from 1 to 86400 (how long an agent keeps a round's unacknowledged records for its coordinator to resume the stream; default {}), got {s}", default.as_secs()),
                );
                default
            }
        }
    }

    pub(crate) fn agent_config(&mut self, raw: Option<&str>) -> Option<PathBuf> {
        let p = resolve(&self.base, raw?);
        if !p.is_file() {
            self.err(
                "agent_config",
                format!(
                    "no such file: {} (an agent config file, as in deploy/agent/; relative to the plan's folder)",
                    p.display()
                ),
            );
        }
        Some(p)
    }

    /// Scenario `i` with its config file loaded and checked; `None` when it has errors
    /// that leave nothing to build.
    /// The plan's `agents:`: unique names, `http://host:port` addresses, or `https://`
    /// ones with TLS files that load; the plan's `tls:` and token for those that give none.
    pub(crate) fn agents(
        &mut self,
        raw: Vec<RawAgent>,
        plan_tls: Option<&RawClientTls>,
        plan_token: (Option<&str>, Option<&str>),
    ) -> Vec<AgentSpec> {
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        for (i, a) in raw.into_iter().enumerate() {
            let key = |k: &str| format!("agents[{i}].{k}");
            let name = a.name.trim().to_owned();
            if name.is_empty() || name.contains(['@', ',']) {
                self.err(
                    &key("name"),
                    format!("must be a non-empty name without `@` or `,`, got {name:?}"),
                );
            } else if !names.insert(name.clone()) {
                self.err(
                    &key("name"),
                    format!("{name:?} names an earlier agent too: give each agent a distinct name"),
                );
            }
            let address = a.address.trim().trim_end_matches('/').to_owned();
            let https = address.starts_with("https://");
            let ok = address
                .strip_prefix("http://")
                .or_else(|| address.strip_prefix("https://"))
                .and_then(|hp| hp.rsplit_once(':'))
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                self.err(
                    &key("address"),
                    format!("must be the agent's gRPC address, http://HOST:PORT or https://HOST:PORT (as kvbench-agent --listen), got {address:?}"),
                );
            }
            let tls = match (&a.tls, https) {
                (Some(_), false) => {
                    self.err(
                        &key("tls"),
                        format!(
                            "TLS is for https:// addresses; address it as https://{} or drop `tls`",
                            address.trim_start_matches("http://")
                        ),
                    );
                    None
                }
                (Some(t), true) => self.client_tls(t, &key("tls"), &name),
                (None, true) => match plan_tls {
                    Some(t) => self.client_tls(t, "tls", &name),
                    None => {
                        self.err(
                            &key("address"),
                            "an https:// agent needs `tls:` (ca_file, and cert_file and key_file for mutual TLS), its own or the plan's".into(),
                        );
                        None
                    }
                },
                (None, false) => None,
            };
            let token = match (a.token_file.as_deref(), a.token_env.as_deref()) {
                (None, None) => self.token(plan_token, "", ""),
                given => self.token(given, &key("token_file"), &key("token_env")),
            };
            out.push(AgentSpec {
                name,
                address,
                labels: a.labels,
                tls,
                token,
            });
        }
        out
    }

    /// A `tls:` section, its files checked now (`key` names it in errors).
    fn client_tls(&mut self, t: &RawClientTls, key: &str, agent: &str) -> Option<ClientTls> {
        let mut ok = true;
        let ca_file = resolve(&self.base, &t.ca_file);
        if let Err(e) = crate::tls::load_roots(&ca_file) {
            self.err(&format!("{key}.ca_file"), e.to_string());
            ok = false;
        }
        let cert_file = t.cert_file.as_deref().map(|f| resolve(&self.base, f));
        let key_file = t.key_file.as_deref().map(|f| resolve(&self.base, f));
        match (&cert_file, &key_file) {
            (Some(c), Some(k)) => {
                if let Err(e) = crate::tls::load_certs(c) {
                    self.err(&format!("{key}.cert_file"), e.to_string());
                    ok = false;
                }
                if let Err(e) = crate::tls::load_key(k) {
                    self.err(&format!("{key}.key_file"), e.to_string());
                    ok = false;
                }
            }
            (None, None) => {}
            _ => {
                self.err(
                    &format!("{key}.cert_file"),
                    "give both cert_file and key_file (the coordinator's client certificate), or neither".into(),
                );
                ok = false;
            }
        }
        ok.then(|| ClientTls {
            ca_file,
            cert_file,
            key_file,
            server_name: t.server_name.clone().unwrap_or_else(|| agent.to_owned()),
        })
    }

    /// `token_file` or `token_env` (a file must exist; the variable is read at connect).
    fn token(
        &mut self,
        (file, env): (Option<&str>, Option<&str>),
        file_key: &str,
        env_key: &str,
    ) -> Option<crate::auth::TokenSource> {
        let file_key = if file_key.is_empty() {
            "token_file"
        } else {
            file_key
        };
        let env_key = if env_key.is_empty() {
            "token_env"
        } else {
            env_key
        };
        match (file, env) {
            (Some(_), Some(_)) => {
                self.err(
                    file_key,
                    format!("give one of `{file_key}` and `{env_key}`, not both"),
                );
                None
            }
            (Some(f), None) => {
                let p = resolve(&self.base, f);
                if !p.is_file() {
                    self.err(
                        file_key,
                        format!("no such file: {} (a file holding the agent's bearer token; relative to the plan's folder)", p.display()),
                    );
                }
                Some(crate::auth::TokenSource::File(p))
            }
            (None, Some("")) => {
                self.err(env_key, "must name an environment variable".into());
                None
            }
            (None, Some(v)) => Some(crate::auth::TokenSource::Env(v.to_owned())),
            (None, None) => None,
        }
    }

    /// The remote agents a scenario names (`agent:`, `agents:` or `selector:`), with how
    /// it runs on several; `None`: the embedded agent of its endpoint.
    pub(crate) fn placement(
        &mut self,
        i: usize,
        s: &RawScenario,
        agents: &[AgentSpec],
    ) -> Option<(Vec<String>, Placement)> {
        let key = |k: &str| format!("test_scenarios[{i}].{k}");
        let given = usize::from(s.agent.is_some())
            + usize::from(s.agents.is_some())
            + usize::from(s.selector.is_some());
        if given == 0 {
            if s.placement.is_some() {
                self.err(
                    &key("placement"),
                    "places a scenario on several agents: name them with `agents:` or `selector:`"
                        .into(),
                );
            }
            return None;
        }
        let which = if s.agent.is_some() {
            "agent"
        } else if s.agents.is_some() {
            "agents"
        } else {
            "selector"
        };
        if given > 1 {
            self.err(
                &key(which),
                "give one of `agent`, `agents` and `selector`".into(),
            );
            return None;
        }
        if agents.is_empty() {
            self.err(
                &key(which),
                "names remote agents, but the plan has no `agents:` section (name, address and labels of each kvbench-agent)".into(),
            );
            return None;
        }
        let known: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
        let names: Vec<String> = match (&s.agent, &s.agents, &s.selector) {
            (Some(a), _, _) => vec![a.clone()],
            (_, Some(list), _) => list.clone(),
            (_, _, Some(sel)) => {
                let found: Vec<String> = agents
                    .iter()
                    .filter(|a| sel.iter().all(|(k, v)| a.labels.get(k) == Some(v)))
                    .map(|a| a.name.clone())
                    .collect();
                if found.is_empty() {
                    self.err(
                        &key("selector"),
                        format!(
                            "no agent has all of these labels; the agents are: {}",
                            agents
                                .iter()
                                .map(|a| format!("{} {:?}", a.name, a.labels))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    return None;
                }
                found
            }
            _ => return None,
        };
        for n in &names {
            if !known.contains(&n.as_str()) {
                self.err(
                    &key(which),
                    format!(
                        "no agent named {n:?}; the plan's agents are: {}",
                        known.join(", ")
                    ),
                );
                return None;
            }
        }
        if names.is_empty() {
            self.err(&key(which), "names no agent".into());
            return None;
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = names.iter().find(|n| !seen.insert(n.as_str())) {
            self.err(&key(which), format!("names agent {twice:?} twice"));
            return None;
        }
        Some((names, s.placement.unwrap_or(Placement::Each)))
    }

    /// `repeats:` checked: 1 to [`MAX_REPEATS`].
    pub(crate) fn repeats(&mut self, i: usize, raw: Option<u32>) -> u32 {
        match raw {
            None => 1,
            Some(n) if (1..=MAX_REPEATS).contains(&n) => n,
            Some(n) => {
                self.err(
                    &format!("test_scenarios[{i}].repeats"),
                    format!("must be 1 to {MAX_REPEATS} (runs of the scenario's rounds, each after its isolation), got {n}"),
                );
                1
            }
        }
    }

    /// `sweep:` checked: one key, 1 to [`MAX_SWEEP_POINTS`] distinct loads, each a valid
    /// load; returned in increasing order.
    pub(crate) fn sweep(
        &mut self,
        i: usize,
        s: &RawScenario,
    ) -> Option<(SweepDimension, Vec<f64>)> {
        let raw = s.sweep.as_ref()?;
        let key = format!("test_scenarios[{i}].sweep");
        let (dimension, mut loads) = match (&raw.concurrency, &raw.request_rate) {
            (Some(c), None) => (
                SweepDimension::Concurrency,
                c.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>(),
            ),
            (None, Some(r)) => (SweepDimension::RequestRate, r.clone()),
            _ => {
                self.err(
                    &key,
                    "give one of `concurrency: [1, 4, 16]` (a closed loop at each) or `request_rate: [1, 2, 4]` (an open loop at each, requests/s)".into(),
                );
                return None;
            }
        };
        let key = format!("{key}.{}", dimension.key());
        if loads.is_empty() || loads.len() > MAX_SWEEP_POINTS {
            self.err(
                &key,
                format!(
                    "must list 1 to {MAX_SWEEP_POINTS} loads, got {}",
                    loads.len()
                ),
            );
            return None;
        }
        if let Some(bad) = loads.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            self.err(&key, format!("every load must be above 0, got {bad}"));
            return None;
        }
        loads.sort_by(f64::total_cmp);
        let suffixes: Vec<String> = loads.iter().map(|&v| dimension.suffix(v)).collect();
        if let Some(w) = suffixes.windows(2).find(|w| w[0] == w[1]) {
            self.err(
                &key,
                format!(
                    "lists the same load twice ({}): each point runs once",
                    w[0].trim_start_matches('~')
                ),
            );
            return None;
        }
        Some((dimension, loads))
    }

    /// `search:` checked (and its `slo:` moved to the scenario's, where `slo:` expects it):
    /// two loads above 0, the lowest first (whole numbers for a concurrency), 3 to
    /// [`MAX_SEARCH_POINTS`] points, objectives, no `sweep:` and no `repeats:` beside it.
    pub(crate) fn search(
        &mut self,
        i: usize,
        s: &mut RawScenario,
        repeats: u32,
    ) -> Option<(SweepDimension, SearchSpec)> {
        let raw = s.search.take()?;
        let key = format!("test_scenarios[{i}].search");
        if s.sweep.is_some() {
            self.err(
                &key,
                "give `sweep:` (a list of loads) or `search:` (a bisection between two loads), not both".into(),
            );
            return None;
        }
        if repeats > 1 {
            self.err(
                &format!("test_scenarios[{i}].repeats"),
                "a `search:` chooses each load from the one before: it does not repeat points; use `sweep:` with `repeats:` for repeated points".into(),
            );
        }
        match (raw.slo, &s.slo) {
            (Some(_), Some(_)) => self.err(
                &format!("{key}.slo"),
                "the scenario gives `slo:` too: give the objectives once".into(),
            ),
            (Some(slo), None) => s.slo = Some(slo),
            (None, Some(_)) => {}
            (None, None) => self.err(
                &key,
                "needs objectives to search for: add `slo: {p95_ttft_ms: \"<= 2000\"}` to it"
                    .into(),
            ),
        }
        let dimension = raw.over.unwrap_or(SweepDimension::Concurrency);
        let between = match raw.between.as_deref() {
            Some(&[lo, hi]) if lo.is_finite() && hi.is_finite() && lo > 0.0 && lo < hi => [lo, hi],
            _ => {
                self.err(
                    &format!("{key}.between"),
                    format!(
                        "must be two loads above 0, the lowest first, such as [1, 512] ({}), got {}",
                        dimension.unit(),
                        raw.between.as_ref().map_or("nothing".to_owned(), |b| format!("{b:?}"))
                    ),
                );
                return None;
            }
        };
        if dimension == SweepDimension::Concurrency && between.iter().any(|v| v.fract() != 0.0) {
            self.err(
                &format!("{key}.between"),
                format!("concurrencies are whole numbers, got {between:?}"),
            );
            return None;
        }
        let points = raw.points.unwrap_or(DEFAULT_SEARCH_POINTS);
        if !(3..=MAX_SEARCH_POINTS).contains(&points) {
            self.err(
                &format!("{key}.points"),
                format!("must be 3 to {MAX_SEARCH_POINTS} (its two ends, then at least one point between), got {points}"),
            );
            return None;
        }
        Some((
            dimension,
            SearchSpec {
                between,
                points,
                chosen: false,
            },
        ))
    }

    /// Whether the scenario's config can take its sweep's loads.
    pub(crate) fn sweep_fits(
        &mut self,
        i: usize,
        s: &Scenario,
        (dimension, _): &(SweepDimension, Vec<f64>),
        what: &str,
    ) {
        let key = match what {
            "sweep" => format!("test_scenarios[{i}].sweep.{}", dimension.key()),
            _ => format!("test_scenarios[{i}].{what}.over"),
        };
        match dimension {
            SweepDimension::Concurrency if s.config.open_loop.is_some() => self.err(
                &key,
                format!("sweeps a closed loop's concurrency, but {} sets `request_rate`/`ramp_up` (an open loop): sweep `request_rate` instead", s.config_file),
            ),
            SweepDimension::RequestRate
                if s
                    .config
                    .open_loop
                    .is_some_and(|o| matches!(o.rate, crate::load::Rate::Ramp { .. })) =>
            {
                self.err(
                    &key,
                    format!("sweeps a fixed request rate, but {} sets `ramp_up`: remove it, or sweep nothing", s.config_file),
                )
            }
            SweepDimension::RequestRate if s.concurrency != 1 => self.err(
                &format!("test_scenarios[{i}].concurrency"),
                "`concurrency` sets a closed loop, but `sweep: {request_rate: ...}` runs an open loop at each rate; cap it with `max_concurrency` in the config file instead".into(),
            ),
            _ => {}
        }
    }

    /// A swept point within the load limits an agent enforces.
    pub(crate) fn point_limits(&mut self, i: usize, s: &Scenario) {
        let Some(p) = &s.sweep else { return };
        let key = match p.search {
            Some(_) => format!("test_scenarios[{i}].search.between"),
            None => format!("test_scenarios[{i}].sweep.{}", p.dimension.key()),
        };
        for e in s.load_limits() {
            if !self.errors.iter().any(|x| x.message.contains(&e.message)) {
                self.err(
                    &key,
                    format!("at {}: {}", crate::util::trim_float(p.value), e.message),
                );
            }
        }
    }

    /// `slo:` checked: figures of one round (latency keys, throughputs, the error rate, the
    /// cache hit ratio), only on a swept scenario.
    pub(crate) fn slo(
        &mut self,
        i: usize,
        raw: Option<RawTargets>,
        swept: bool,
    ) -> Vec<crate::targets::Target> {
        let Some(raw) = raw else { return Vec::new() };
        let key = format!("test_scenarios[{i}].slo");
        if !swept {
            self.err(
                &key,
                "objectives give a capacity over loads: add `sweep: {concurrency: [1, 4, 16, 64]}` (or `request_rate:`), or use `targets:` for one load".into(),
            );
            return Vec::new();
        }
        if raw.is_empty() {
            self.err(
                &key,
                "names no objective; give e.g. `p95_ttft_ms: \"<= 2000\"`".into(),
            );
        }
        let slo = self.targets(&key, raw);
        for t in &slo {
            if !crate::targets::is_round_figure(&t.metric) {
                self.err(
                    &format!("{key}.{}", t.metric),
                    format!("{:?} compares rounds; an objective is a figure of one round: a latency figure such as p95_ttft_ms or p99_tpot_ms, or {}", t.metric, crate::targets::ROUND_FIGURES.join(", ")),
                );
            }
        }
        slo
    }

    /// Resolves each `baseline:` to a scenario as run: the one of that name, or, for a
    /// scenario run once per agent, the baseline's run on the same agent
    /// (`without-cache@gpu-a` for `with-cache@gpu-a`).
    pub(crate) fn baselines(&mut self, scenarios: &mut [Scenario], bases: &[(usize, usize)]) {
        let names: Vec<String> = scenarios.iter().map(|s| s.name.clone()).collect();
        for &(j, i) in bases {
            let Some(b) = scenarios[j].baseline.clone() else {
                continue;
            };
            let key = format!("test_scenarios[{i}].baseline");
            let own = &scenarios[j];
            let on_same_agent = match own.agents.as_slice() {
                [a] => Some(format!("{b}@{a}")),
                _ => None,
            };
            // The baseline's run with the same repeat index, else its first, else itself;
            // a swept scenario's, at the same load.
            let index = own.repeat.as_ref().map_or(1, |r| r.index);
            let at = own
                .sweep
                .as_ref()
                .map(|p| match p.search {
                    Some(_) => format!("~s{}", p.index),
                    None => p.dimension.suffix(p.value),
                })
                .unwrap_or_default();
            let candidates: Vec<String> = on_same_agent.into_iter().chain([b.clone()]).collect();
            let found = candidates
                .iter()
                .filter(|_| !at.is_empty())
                .map(|c| format!("{c}{at}"))
                .chain(candidates.iter().cloned())
                .find_map(|c| {
                    [format!("{c}#{index}"), format!("{c}#1"), c]
                        .into_iter()
                        .find(|n| names.contains(n))
                })
                // A searched scenario against a swept one (or the other way): any of its
                // points, for the capacities are compared as a whole.
                .or_else(|| {
                    let swept = |n: &&String| {
                        candidates.iter().any(|c| {
                            n.strip_prefix(c.as_str())
                                .is_some_and(|rest| rest.starts_with('~'))
                        })
                    };
                    (!at.is_empty())
                        .then(|| names.iter().find(swept).cloned())
                        .flatten()
                });
            match found {
                Some(n) if n == own.name => {
                    self.err(
                        &key,
                        "names the scenario itself; name another scenario of the plan".into(),
                    );
                }
                Some(n) => scenarios[j].baseline = Some(n),
                None => self.err(
                    &key,
                    format!(
                        "no scenario named {b:?}; the plan's scenarios are: {}",
                        names.join(", ")
                    ),
                ),
            }
        }
    }

    /// The scenario as it runs: on its embedded agent, on one remote agent, once per agent
    /// (`each`: named `<name>@<agent>`) or across them (`split`: one scenario). A remote
    /// agent measures its own engine: the
    /// config's endpoint must be `agent` or that engine's URL (checked once the agent
    /// answers), never the embedded `sim`.
    pub(crate) fn expand(
        &mut self,
        i: usize,
        s: Scenario,
        placed: Option<(Vec<String>, Placement)>,
    ) -> Vec<Scenario> {
        let Some((names, placement)) = placed else {
            if s.config.endpoint == Endpoint::Agent {
                self.errors.push(PlanError {
                    file: s.config_path.clone(),
                    line: line_of(&s.config_path, "endpoint"),
                    key: "endpoint".into(),
                    message: format!("`agent` means the engine of the remote agent the scenario runs on, but test_scenarios[{i}] names no agent (agent:, agents: or selector:)"),
                });
            }
            return vec![s];
        };
        if s.config.endpoint == Endpoint::Sim {
            self.errors.push(PlanError {
                file: s.config_path.clone(),
                line: line_of(&s.config_path, "endpoint"),
                key: "endpoint".into(),
                message: "`sim` is the coordinator's embedded engine, but this scenario runs on remote agents, which measure the engine in their own config file: give `endpoint: agent`".into(),
            });
        }
        if names.len() == 1 || placement == Placement::Split {
            return vec![Scenario { agents: names, ..s }];
        }
        names
            .into_iter()
            .map(|a| {
                let name = format!("{}@{a}", s.name);
                Scenario {
                    slug: slug(&name),
                    name,
                    agents: vec![a],
                    ..s.clone()
                }
            })
            .collect()
    }

    pub(crate) fn scenario(&mut self, i: usize, s: RawScenario) -> Option<Scenario> {
        let key = |k: &str| format!("test_scenarios[{i}].{k}");
        let name = s.name.trim().to_owned();
        if name.is_empty() {
            self.err(&key("name"), "must not be empty".into());
        }
        let name_for_labels = name.clone();
        let sl = slug(&name);
        let rounds = s.rounds.unwrap_or(DEFAULT_ROUNDS);
        if rounds == 0 {
            self.err(
                &key("rounds"),
                "must be at least 1 (2 = cold start, then cache hit)".into(),
            );
        }
        let concurrency = s.concurrency.unwrap_or(1);
        if concurrency == 0 {
            self.err(
                &key("concurrency"),
                "must be at least 1 (absent = 1, serial)".into(),
            );
        }
        let config_path = self.config_file(&key("config_file"), &s.config_file)?;
        let config = match load_config(&config_path, s.scenario) {
            Ok(config) => config,
            Err(mut e) => {
                self.errors.append(&mut e.0);
                return None;
            }
        };
        if s.concurrency.is_some() && config.open_loop.is_some() {
            self.err(
                &key("concurrency"),
                format!(
                    "`concurrency` asks for a closed loop, but {} sets `request_rate`/`ramp_up` (an open loop); cap an open loop with `max_concurrency` in the config file instead",
                    s.config_file
                ),
            );
            return None;
        }
        let scenario = Scenario {
            name,
            slug: sl,
            config_file: s.config_file,
            config_path,
            kind: s.scenario,
            rounds,
            concurrency,
            config,
            agents: Vec::new(),
            targets: Vec::new(),
            labels: match s.labels {
                Some(own) => own,
                None => labels_from_name(&name_for_labels),
            },
            baseline: s.baseline.map(|b| b.trim().to_owned()),
            repeat: None,
            sweep: None,
        };
        // The trust boundary: the same check an agent makes before it allocates.
        for e in scenario.load_limits() {
            if e.field == "concurrency" {
                self.err(&key("concurrency"), e.message);
            } else {
                self.errors.push(config_error(&scenario.config_path, &e));
            }
        }
        Some(scenario)
    }

    /// The scenario's config file, resolved, when it is a file.
    pub(crate) fn config_file(&mut self, key: &str, raw: &str) -> Option<PathBuf> {
        let config_path = resolve(&self.base, raw);
        let shown = std::path::absolute(&config_path).unwrap_or(config_path.clone());
        if config_path.is_dir() {
            self.err(
                key,
                format!("{} is a folder, not a config file", shown.display()),
            );
            return None;
        }
        if !config_path.is_file() {
            self.err(
                key,
                format!(
                    "config file {raw:?} not found (looked for {}); paths resolve against the plan's folder",
                    shown.display()
                ),
            );
            return None;
        }
        Some(config_path)
    }
}

pub(crate) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}
