//! The embedded default: an in-process agent per endpoint of the plan (plus kvbench-sim
//! for `sim`), configured from the plan's agent config file when it has one. The
//! coordinator talks gRPC to them as to any agent.

use std::collections::BTreeMap;

use anyhow::Context;
use kvbench_agent::config::AgentFile;
use kvbench_common::plan::{line_of, Endpoint, Plan, PlanError, PlanErrors};
use kvbench_sim::{SimConfig, SimHandle};

use super::client::AgentClient;

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
                config.clear_mooncake_metadata(url);
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
