//! What a plan's scenarios read besides their config: datasets and tokenizers, loaded once
//! per run and checked before anything runs (`kvbench validate` loads them exactly as far
//! as `kvbench run` would read them), so that a malformed file is an error naming its file
//! and line, not a scenario that fails halfway through a run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use kvbench_common::dataset::{self, Dataset, DatasetError};
use kvbench_common::limits::LimitError;
use kvbench_common::plan::{Plan, PlanError, PlanErrors, Scenario};
use kvbench_common::tokenizer::{HfTokenizer, NotATokenizer};

/// Datasets and tokenizers of a plan, by scenario index.
#[derive(Debug, Default)]
pub struct Inputs {
    datasets: BTreeMap<usize, Arc<Dataset>>,
    tokenizers: BTreeMap<usize, Arc<Vec<u8>>>,
}

impl Inputs {
    /// Reads every dataset (the requests a run would read of it) and tokenizer the plan
    /// names; each file once, however many scenarios use it.
    pub fn load(plan: &Plan) -> Result<Inputs, PlanErrors> {
        let mut inputs = Inputs::default();
        let mut datasets: BTreeMap<(PathBuf, String, usize), Arc<Dataset>> = BTreeMap::new();
        let mut tokenizers: BTreeMap<PathBuf, Arc<Vec<u8>>> = BTreeMap::new();
        let mut errors = Vec::new();
        for (i, s) in plan.scenarios.iter().enumerate() {
            if let Some(spec) = &s.config.dataset {
                let limit = s.config.workload.num_requests as usize;
                let key = (spec.path.clone(), format!("{:?}", spec.format), limit);
                let loaded = match datasets.get(&key) {
                    Some(d) => Ok(d.clone()),
                    None => dataset::load(spec, limit)
                        .map_err(InputError::from)
                        .map(Arc::new)
                        .and_then(|d| {
                            check_trace(&d)?;
                            Ok(d)
                        }),
                };
                match loaded {
                    Ok(d) => {
                        datasets.insert(key, d.clone());
                        inputs.datasets.insert(i, d);
                    }
                    Err(e) => errors.push(error(s, "dataset.path", &e)),
                }
            }
            if let Some(path) = &s.config.tokenizer {
                let loaded = match tokenizers.get(path) {
                    Some(t) => Ok(t.clone()),
                    None => read_tokenizer(path).map(Arc::new),
                };
                match loaded {
                    Ok(t) => {
                        tokenizers.insert(path.clone(), t.clone());
                        inputs.tokenizers.insert(i, t);
                    }
                    Err(e) => errors.push(error(s, "tokenizer", &e)),
                }
            }
        }
        if errors.is_empty() {
            Ok(inputs)
        } else {
            Err(PlanErrors(errors))
        }
    }

    pub fn dataset(&self, scenario: usize) -> Option<&Dataset> {
        self.datasets.get(&scenario).map(|d| &**d)
    }

    pub fn tokenizer(&self, scenario: usize) -> Option<&[u8]> {
        self.tokenizers.get(&scenario).map(|t| t.as_slice())
    }
}

/// A file a scenario reads that cannot be used.
#[derive(Debug, thiserror::Error)]
enum InputError {
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    OverLimits(Vec<LimitError>),
    #[error("{}: cannot read: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    NotATokenizer {
        path: PathBuf,
        source: NotATokenizer,
    },
}

fn check_trace(d: &Dataset) -> Result<(), InputError> {
    match d {
        Dataset::Trace(entries) => {
            kvbench_common::limits::check_trace(entries).map_err(InputError::OverLimits)
        }
        Dataset::Conversations(_) => Ok(()),
    }
}

/// The file's bytes, once they parse as a `tokenizer.json`.
fn read_tokenizer(path: &std::path::Path) -> Result<Vec<u8>, InputError> {
    let bytes = std::fs::read(path).map_err(|source| InputError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    HfTokenizer::from_bytes(&bytes).map_err(|source| InputError::NotATokenizer {
        path: path.to_owned(),
        source,
    })?;
    Ok(bytes)
}

fn error(s: &Scenario, key: &str, e: &InputError) -> PlanError {
    PlanError {
        file: s.config_path.clone(),
        line: kvbench_common::plan::line_of(&s.config_path, key),
        key: key.to_owned(),
        message: e.to_string(),
    }
}
