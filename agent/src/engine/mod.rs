//! Everything the agent says to its engine (and the stores beside it), over the HTTP
//! transport owned here ([`http`]): the clear steps ([`clear`]), the engine's identity and
//! health during a restart ([`identity`]), notes about its configuration ([`notes`]), its
//! token costs ([`tokens`]) and its Prometheus metrics ([`metrics`]).
//!
//! May import: `kvbench_common` and the agent's config. Never the core, the load or gRPC.

pub(crate) mod clear;
pub(crate) mod http;
pub(crate) mod identity;
pub(crate) mod metrics;
pub(crate) mod notes;
pub(crate) mod tokens;
