//! Plan errors: each names the file, the line and the key, and says what is valid.

use crate::yaml_index::YamlIndex;
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a plan or config file.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Dotted path of the key (`test_scenarios[1].rounds`); empty for the whole file.
    pub key: String,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a plan (at least one).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct PlanErrors(pub Vec<PlanError>);

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<PlanError> for PlanErrors {
    fn from(e: PlanError) -> Self {
        PlanErrors(vec![e])
    }
}

/// Turns a serde_yaml error into one that names the key and says what is valid.
/// A serde_yaml error as a [`PlanError`] naming the file, the line and the key (any YAML file
/// kvbench reads: plans, scenario configs, agent configs).
pub fn yaml_error(file: &Path, text: &str, e: &serde_yaml::Error) -> PlanError {
    let mut msg = e.to_string();
    let line = e.location().map(|l| l.line());
    if let Some(pos) = msg.rfind(" at line ") {
        msg.truncate(pos);
    }
    // serde_yaml writes "path.to.key: message" when the error is below the top level.
    let (mut key, mut message) = match msg.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (path.to_owned(), rest.to_owned()),
        _ => (String::new(), msg.clone()),
    };
    if let Some(field) = between(&message, "unknown field `", "`") {
        key = join_key(&key, field);
        message = message.replacen("expected one of", "valid keys here are", 1);
        message = message.replacen(", expected ", ", valid keys here are ", 1);
    } else if let Some(field) = between(&message, "missing field `", "`") {
        key = join_key(&key, field);
        message = format!("missing required key `{field}`");
    } else if message.starts_with("unknown variant") {
        message = message.replacen("expected one of", "valid values are", 1);
        message = message.replacen(", expected ", ", valid values are ", 1);
    }
    if key.is_empty() && text.trim().is_empty() {
        message = "the file is empty".into();
    }
    // Not a mapping at the top (a list, a bare value): say what the file must hold, not
    // the name of a Rust type.
    for (raw, what) in [
        (
            "struct RawPlan",
            "a plan: keys such as output_dir and test_scenarios, one per line",
        ),
        (
            "struct RawConfig",
            "a scenario config: keys such as endpoint and num_requests, one per line",
        ),
    ] {
        if let Some(pos) = message.find(raw) {
            message = format!("{}{what}", &message[..pos]);
        }
    }
    PlanError {
        file: file.to_owned(),
        line,
        key,
        message,
    }
}

pub(crate) fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &s[s.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

pub(crate) fn join_key(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

/// The line of `key` (a path such as `workload.document_tokens`, or its nearest ancestor)
/// in the YAML file at `path`, from the parser's positions; `None` when the file cannot be
/// read or lacks it.
pub fn line_of(path: &Path, key: &str) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    YamlIndex::of(&text).line(key)
}
