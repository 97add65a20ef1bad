//! Where each key and list item of a YAML file starts, by its path, with positions taken
//! from a YAML parser's events: the one way kvbench points at a line of a plan, a scenario
//! config or an agent config. Paths are written as users read them: `output_dir`,
//! `test_scenarios[2].config_file`, `workload.document_tokens`.

use std::collections::BTreeMap;

use saphyr_parser::{Event, Parser};

/// The 1-based line of every key and sequence item of one YAML document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct YamlIndex {
    lines: BTreeMap<String, usize>,
}

/// A collection being walked: its path, and where the walk is inside it.
enum Frame {
    Mapping {
        path: String,
        /// The key whose value comes next; `None` while a key is expected.
        key: Option<String>,
    },
    Sequence {
        path: String,
        next: usize,
    },
}

fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl YamlIndex {
    /// Indexes `text`. A file the parser rejects keeps what was indexed before the error
    /// (its own error carries the position).
    pub fn of(text: &str) -> YamlIndex {
        let mut lines = BTreeMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let line = span.start.line();
            // A node starting here: its path, when it sits in value or item position.
            let node_path = |stack: &mut Vec<Frame>, lines: &mut BTreeMap<String, usize>| {
                match stack.last_mut() {
                    None => Some(String::new()),
                    Some(Frame::Mapping { path, key }) => key.take().map(|k| child(path, &k)),
                    Some(Frame::Sequence { path, next }) => {
                        let p = format!("{path}[{next}]");
                        *next += 1;
                        lines.entry(p.clone()).or_insert(line);
                        Some(p)
                    }
                }
            };
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Mapping {
                        path,
                        key: key @ None,
                    }) = stack.last_mut()
                    {
                        let p = child(path, &value);
                        lines.entry(p).or_insert(line);
                        *key = Some(value.into_owned());
                    } else {
                        node_path(&mut stack, &mut lines);
                    }
                }
                Event::Alias(_) => {
                    node_path(&mut stack, &mut lines);
                }
                Event::MappingStart(..) => {
                    if let Some(Frame::Mapping { key: None, .. }) = stack.last() {
                        // A complex key: index nothing below it.
                        stack.push(Frame::Mapping {
                            path: "?".into(),
                            key: None,
                        });
                        continue;
                    }
                    let path = node_path(&mut stack, &mut lines).unwrap_or_default();
                    stack.push(Frame::Mapping { path, key: None });
                }
                Event::SequenceStart(..) => {
                    let path = node_path(&mut stack, &mut lines).unwrap_or_default();
                    stack.push(Frame::Sequence { path, next: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::DocumentEnd => break,
                _ => {}
            }
        }
        YamlIndex { lines }
    }

    /// The line of `path` exactly, if the file has it.
    pub fn exact(&self, path: &str) -> Option<usize> {
        self.lines.get(path).copied()
    }

    /// The line of `path`, or of its nearest ancestor that the file has (a missing key
    /// points at its block; a bad item at its list).
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = "\
# a comment
output_dir: ./out
test_scenarios:
  - name: first
    config_file: a.yaml
  -   name: second   # odd indent
      rounds: 3
      workload:
        type: multi_turn
        turns: [1, 2]
wait_between_scenarios: 5
nested:
  deep:
    key: x
";

    #[test]
    fn keys_and_items_at_their_lines() {
        let ix = YamlIndex::of(PLAN);
        assert_eq!(ix.exact("output_dir"), Some(2));
        assert_eq!(ix.exact("test_scenarios"), Some(3));
        assert_eq!(ix.exact("test_scenarios[0]"), Some(4));
        assert_eq!(ix.exact("test_scenarios[0].config_file"), Some(5));
        assert_eq!(ix.exact("test_scenarios[1].name"), Some(6));
        assert_eq!(ix.exact("test_scenarios[1].rounds"), Some(7));
        assert_eq!(ix.exact("test_scenarios[1].workload.type"), Some(9));
        assert_eq!(ix.exact("test_scenarios[1].workload.turns[1]"), Some(10));
        assert_eq!(ix.exact("wait_between_scenarios"), Some(11));
        assert_eq!(ix.exact("nested.deep.key"), Some(14));
    }

    #[test]
    fn missing_paths_fall_back_to_their_nearest_ancestor() {
        let ix = YamlIndex::of(PLAN);
        assert_eq!(
            ix.line("test_scenarios[1].workload.document_tokens"),
            Some(8)
        );
        assert_eq!(ix.line("test_scenarios[7].name"), Some(3));
        assert_eq!(ix.line("nope"), None);
        assert_eq!(ix.exact("test_scenarios[1].workload.document_tokens"), None);
    }

    #[test]
    fn flow_style_and_broken_files() {
        let ix = YamlIndex::of("a: {b: 1, c: [x, {d: 2}]}\ne: 3\n");
        assert_eq!(ix.exact("a.c[1].d"), Some(1));
        assert_eq!(ix.exact("e"), Some(2));
        let broken = YamlIndex::of("a: 1\nb: [\n");
        assert_eq!(broken.exact("a"), Some(1));
        assert_eq!(YamlIndex::of(""), YamlIndex::default());
    }

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
