//! Where the coordinator's agents come from: the embedded default (an in-process agent per
//! endpoint, plus kvbench-sim for `sim`), and the plan's agent config file.

use std::collections::BTreeMap;

use anyhow::Context;
use kvbench_agent::config::AgentFile;
use kvbench_common::plan::{line_of, AgentSpec, Endpoint, Plan, PlanError, PlanErrors, Scenario};
use kvbench_sim::{SimConfig, SimHandle};

use crate::agent_client::{AgentClient, AgentError, Clock};

/// The plan's `agent_config:` file, loaded and matched to the scenarios it serves: its
/// `engine.base_url` must be some scenario's endpoint.
pub fn agent_file(plan: &Plan) -> Result<Option<AgentFile>, PlanErrors> {
    let Some(path) = &plan.agent_config else {
        return Ok(None);
    };
    let f = kvbench_agent::config::load(path)?;
    let endpoints: Vec<String> = plan
        .scenarios
        .iter()
        .filter(|s| !s.is_remote())
        .map(|s| s.config.endpoint.to_string())
        .collect();
    if !endpoints
        .iter()
        .any(|e| e.trim_end_matches('/') == f.engine_url)
    {
        let mut shown = endpoints.clone();
        shown.dedup();
        return Err(PlanErrors(vec![PlanError {
            file: plan.path.clone(),
            line: line_of(&plan.path, "agent_config"),
            key: "agent_config".into(),
            message: format!(
                "{} serves {}, which is no scenario's endpoint (the scenarios use: {}); it configures the agent of the scenarios whose endpoint is its engine.base_url",
                path.display(),
                f.engine_url,
                shown.join(", ")
            ),
        }]));
    }
    Ok(Some(f))
}

/// The embedded default: one in-process agent per distinct endpoint of the plan, and one
/// in-process kvbench-sim shared by every `sim` scenario (so isolation between scenarios
/// matters there exactly as on a real engine). The coordinator still talks gRPC to them.
#[derive(Debug)]
pub struct Embedded {
    pub sim: Option<SimHandle>,
    agents: Vec<kvbench_agent::AgentHandle>,
    pub by_endpoint: BTreeMap<Endpoint, AgentClient>,
}

impl Embedded {
    pub async fn start(plan: &Plan, sim_config: SimConfig) -> anyhow::Result<Embedded> {
        let file = agent_file(plan).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut sim = None;
        let mut agents = Vec::new();
        let mut by_endpoint = BTreeMap::new();
        for s in plan.scenarios.iter().filter(|s| !s.is_remote()) {
            let ep = &s.config.endpoint;
            if by_endpoint.contains_key(ep) || *ep == Endpoint::Agent {
                continue;
            }
            let engine_url = match ep {
                Endpoint::Sim => {
                    if sim.is_none() {
                        sim = Some(
                            kvbench_sim::spawn(sim_config.clone())
                                .await
                                .context("cannot start the embedded kvbench-sim")?,
                        );
                    }
                    sim.as_ref().map(SimHandle::base_url).unwrap_or_default()
                }
                Endpoint::Url(u) => u.clone(),
                Endpoint::Agent => continue,
            };
            let name = match ep {
                Endpoint::Sim => "embedded-sim".to_owned(),
                Endpoint::Url(u) => format!("embedded-{}", u.trim_start_matches("http://")),
                Endpoint::Agent => continue,
            };
            let mut config = match &file {
                // The plan's agent config file describes this engine's host.
                Some(f) if *ep == Endpoint::Url(f.engine_url.clone()) => {
                    kvbench_agent::AgentConfig::from_file(f.clone(), || name)
                }
                _ => kvbench_agent::AgentConfig::vllm(name, engine_url),
            };
            config
                .labels
                .insert("mode".to_owned(), "embedded".to_owned());
            if let Some(url) = &plan.mooncake_metadata_server_url {
                // The seed's Mooncake call is the agent's to make, like every clear step.
                config
                    .clear_steps
                    .push(kvbench_agent::clear::mooncake_metadata_step(url));
            }
            let handle = kvbench_agent::spawn(config)
                .await
                .context("cannot start the embedded agent")?;
            let agent = AgentClient::connect(&handle.url()).await?;
            agents.push(handle);
            by_endpoint.insert(ep.clone(), agent);
        }
        Ok(Embedded {
            sim,
            agents,
            by_endpoint,
        })
    }

    pub async fn stop(self) {
        drop(self.by_endpoint);
        for a in self.agents {
            a.stop().await;
        }
        if let Some(s) = self.sim {
            s.stop().await;
        }
    }
}

/// The agents a plan runs on: embedded ones by endpoint, remote ones by name.
#[derive(Debug, Clone, Default)]
pub struct AgentSet {
    pub by_endpoint: BTreeMap<Endpoint, AgentClient>,
    pub by_name: BTreeMap<String, AgentClient>,
}

impl AgentSet {
    /// The agents a scenario runs on (one, or several for a split scenario); `Err` names
    /// the one that is not connected.
    pub fn for_scenario(&self, s: &Scenario) -> Result<Vec<&AgentClient>, String> {
        if !s.is_remote() {
            return self
                .by_endpoint
                .get(&s.config.endpoint)
                .map(|a| vec![a])
                .ok_or_else(|| format!("no agent serves endpoint {}", s.config.endpoint));
        }
        s.agents
            .iter()
            .map(|name| {
                self.by_name
                    .get(name)
                    .ok_or_else(|| format!("agent {name} is not connected"))
            })
            .collect()
    }

    pub fn all(&self) -> impl Iterator<Item = &AgentClient> {
        self.by_endpoint.values().chain(self.by_name.values())
    }
}

impl From<BTreeMap<Endpoint, AgentClient>> for AgentSet {
    fn from(by_endpoint: BTreeMap<Endpoint, AgentClient>) -> Self {
        AgentSet {
            by_endpoint,
            by_name: BTreeMap::new(),
        }
    }
}

/// A remote agent of the plan as the coordinator found it.
#[derive(Debug)]
pub struct Reached {
    pub spec: AgentSpec,
    /// The connected agent and its clock, or why not.
    pub result: Result<(AgentClient, Clock), AgentError>,
}

/// Above this clock offset an agent's times are not comparable with the others' as they are.
pub const CLOCK_OFFSET_WARN_MS: f64 = 50.0;

/// Connects to every remote agent of the plan at once: handshake (versions), then five
/// pings for its clock.
pub async fn reach(plan: &Plan) -> Vec<Reached> {
    let mut set = tokio::task::JoinSet::new();
    for (i, spec) in plan.agents.iter().cloned().enumerate() {
        set.spawn(async move {
            let result = match AgentClient::connect(&spec.address).await {
                Ok(a) => match a.clock(5).await {
                    Ok(c) => Ok((a.with_clock(c), c)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            (i, Reached { spec, result })
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            out.push(r);
        }
    }
    // In the plan's order.
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Scenarios placed on a remote agent whose config names an engine URL the agent does not
/// own: each an error at the scenario config's `endpoint`, saying which agent owns which
/// engine.
pub fn ownership_errors(plan: &Plan, reached: &[Reached]) -> Vec<PlanError> {
    let mut errors = Vec::new();
    for (s, name) in plan
        .scenarios
        .iter()
        .flat_map(|s| s.agents.iter().map(move |a| (s, a)))
    {
        let Endpoint::Url(url) = &s.config.endpoint else {
            continue;
        };
        let Some(Ok((a, _))) = reached
            .iter()
            .find(|r| &r.spec.name == name)
            .map(|r| r.result.as_ref())
        else {
            continue;
        };
        let owns = a.info().engine_display.trim_end_matches('/');
        if owns != url.trim_end_matches('/') {
            errors.push(PlanError {
                file: s.config_path.clone(),
                line: line_of(&s.config_path, "endpoint"),
                key: "endpoint".into(),
                message: format!(
                    "scenario {:?} runs on agent {name}, which owns the engine {owns}, not {url}: an agent measures only the engine of its own config file; give `endpoint: agent` (or {owns})",
                    s.name
                ),
            });
        }
    }
    errors
}
