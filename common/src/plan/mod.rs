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

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::DatasetSpec;
use crate::load::{Arrivals, LoadSpec, RampStrategy, Rate};
use crate::stats::{Goodput, StatsOptions, DEFAULT_PERCENTILES};
use crate::util::slug;
use crate::workload::{OutputDist, WorkloadKind, WorkloadParams, WorkloadSpec, MAX_OUTPUT_TOKENS};
use crate::yaml_index::YamlIndex;

pub use check_config::load_config;
pub use check_plan::{load, read_yaml};
pub use error::*;
pub use model::*;
use raw::*;
pub use raw::{AgentSpec, Placement};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_inside_list_items() {
        let text = "output_dir: x\ntest_scenarios:\n  - name: a\n    config_file: a.yaml\n  - name: b\n    # c\n    rounds: 3\n    config_file: b.yaml\nwait_between_scenarios: 1\n";
        let ix = YamlIndex::of(text);
        assert_eq!(ix.line("test_scenarios[0].config_file"), Some(4));
        assert_eq!(ix.line("test_scenarios[1].config_file"), Some(8));
        assert_eq!(ix.line("test_scenarios[1].name"), Some(5));
        assert_eq!(ix.line("test_scenarios[1].rounds"), Some(7));
        assert_eq!(ix.line("wait_between_scenarios"), Some(9));
    }
}
