//! Prometheus text exposition, as engines serve it on `/metrics`: the families kvbench
//! reads, summed over their label sets. The agent scrapes its engine with it; the
//! coordinator reads the sim's counters with it when it calibrates.

use std::collections::BTreeMap;

/// Parses Prometheus text exposition, keeping the families in `wanted` (summed over label
/// sets). Lines it cannot read are skipped: a scrape never fails a round.
pub fn parse(text: &str, wanted: &[&str]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => continue,
        };
        if !wanted.contains(&name) {
            continue;
        }
        let after_labels = match rest.strip_prefix('{') {
            Some(r) => match r.rfind('}') {
                Some(j) => &r[j + 1..],
                None => continue,
            },
            None => rest,
        };
        let Some(value) = after_labels
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        if value.is_finite() {
            *out.entry(name.to_owned()).or_insert(0.0) += value;
        }
    }
    out
}
