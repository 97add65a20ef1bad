//! The plan (`multi_scenario_config.yaml`, the seed's format) and the per-scenario config
//! files it names, loaded as raw serde structs with `deny_unknown_fields` and then
//! validated. Every error names the file, the line and the key, and says what is valid.
//!
//! - `raw`: the files as written;
//! - `model`: the validated plan, scenarios and config;
//! - `error`: [`PlanError`], with file, line and key;
//! - `check_plan`: [`load`], the plan file and its scenarios;
//! - `check_config`: [`load_config`], a per-scenario config file.
//!
//! May import: the rest of common (workloads, load shapes, datasets, statistics options,
//! the YAML index). Nothing that runs anything.

mod check_config;
mod check_plan;
mod error;
mod model;
mod raw;

pub use check_config::load_config;
pub use check_plan::{load, read_yaml};
pub use error::*;
pub use model::*;
pub use raw::{AgentSpec, ClientTls, Placement};
