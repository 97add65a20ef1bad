//! Where the coordinator's agents come from, and how it talks to them.
//!
//! - [`client`]: the gRPC client, the only coordinator file that names generated types;
//! - [`embedded`]: the embedded default (in-process agents and kvbench-sim);
//! - [`remote`]: the plan's remote agents, reached and checked before a run;
//! - [`tls`]: TLS and the bearer token towards an agent, refusals named; [`certs`]: the
//!   CA, certificates and token `kvbench certs init` issues.
//!
//! May import: `kvbench_common`, `kvbench_proto` (in `client` alone), the agent's and the
//! sim's public API. Never the engine, the presenters or the CLI.

pub mod certs;
pub mod client;
pub mod embedded;
pub mod remote;
pub mod tls;

use std::collections::BTreeMap;

use kvbench_common::plan::{Endpoint, Scenario};

pub use client::{AgentClient, AgentError, Clock, EngineTrouble, RoundEnd, RoundFailure, RoundRun};
pub use embedded::{agent_file, Embedded};
pub use remote::{ownership_errors, reach, Reached, CLOCK_OFFSET_WARN_MS};

/// A scenario whose agent is not connected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotConnected {
    #[error("no agent serves endpoint {0}")]
    Endpoint(Endpoint),
    #[error("agent {0} is not connected")]
    Agent(String),
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
    pub fn for_scenario(&self, s: &Scenario) -> Result<Vec<&AgentClient>, NotConnected> {
        if !s.is_remote() {
            return self
                .by_endpoint
                .get(&s.config.endpoint)
                .map(|a| vec![a])
                .ok_or_else(|| NotConnected::Endpoint(s.config.endpoint.clone()));
        }
        s.agents
            .iter()
            .map(|name| {
                self.by_name
                    .get(name)
                    .ok_or_else(|| NotConnected::Agent(name.clone()))
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
