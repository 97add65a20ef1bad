//! Prometheus text exposition, as engines serve it on `/metrics`: the families kvbench
//! reads, summed over their label sets. The agent scrapes its engine with it; the
//! coordinator reads the sim's counters with it when it calibrates.

use std::collections::BTreeMap;

/// The values of `family`'s series by the value of their label `label` (summed over the
/// other labels); at most 16 label values, each 1 to 40 characters of `[A-Za-z0-9_.-]`
/// (an engine's text is not trusted).
pub fn by_label(text: &str, family: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let key = format!("{label}=\"");
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix(family) else {
            continue;
        };
        let Some(labels) = rest.strip_prefix('{') else {
            continue;
        };
        let Some(end) = labels.rfind('}') else {
            continue;
        };
        let Some(value) = labels[end + 1..]
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite())
        else {
            continue;
        };
        let labels = &labels[..end];
        let Some(start) = labels
            .match_indices(&key)
            .map(|(i, _)| i)
            .find(|i| *i == 0 || labels[..*i].ends_with(','))
        else {
            continue;
        };
        let v = &labels[start + key.len()..];
        let Some(v) = v.split('"').next() else {
            continue;
        };
        let fine = (1..=40).contains(&v.len())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if fine && (out.len() < 16 || out.contains_key(v)) {
            *out.entry(v.to_owned()).or_insert(0.0) += value;
        }
    }
    out
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_read_bounded_and_summed() {
        let text = r#"
vllm:cache_config_info{_block_size_resolved="True",block_size="128",engine="0"} 1.0
vllm:prompt_tokens_by_source_total{engine="0",source="local_compute"} 2092.0
vllm:prompt_tokens_by_source_total{engine="1",source="local_compute"} 8
vllm:prompt_tokens_by_source_total{engine="0",source="local_cache_hit"} 1920.0
vllm:prompt_tokens_by_source_created{engine="0",source="local_cache_hit"} 1.7e9
vllm:prompt_tokens_by_source_total{source="a|b"} 5
vllm:prompt_tokens_by_source_total{source="x"} NaN
"#;
        let blocks = by_label(text, "vllm:cache_config_info", "block_size");
        assert_eq!(blocks.keys().collect::<Vec<_>>(), ["128"]);
        let src = by_label(text, "vllm:prompt_tokens_by_source_total", "source");
        assert_eq!(src.get("local_compute"), Some(&2100.0));
        assert_eq!(src.get("local_cache_hit"), Some(&1920.0));
        assert_eq!(src.len(), 2, "{src:?}");
        let many: String = (0..40)
            .map(|i| format!("f{{source=\"s{i}\"}} 1\n"))
            .collect();
        assert_eq!(by_label(&many, "f", "source").len(), 16);
    }
}
