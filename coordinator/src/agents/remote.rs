//! The plan's remote agents (`agents:`): reached all at once before anything runs, and
//! checked against the engines their scenarios name.

use kvbench_common::plan::{line_of, AgentSpec, Endpoint, Plan, PlanError};

use super::client::{AgentClient, AgentError, Clock};

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
            let result = match AgentClient::connect_to(&spec).await {
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
