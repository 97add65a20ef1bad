//! Datasets: request sets read from files instead of generated.
//!
//! - `sharegpt`: the common public JSON (a list of `{"conversations": [{"from": "human" |
//!   "gpt" | "system", "value": ...}]}`); each conversation is replayed turn by turn, every
//!   turn resending the history with the engine's real replies; a turn's `max_tokens` is the
//!   length of the dataset's reply to it.
//! - `mooncake`: the Mooncake trace JSONL (`{"timestamp", "input_length", "output_length",
//!   "hash_ids"}`): hash id `h` at position `i` stands for a fixed pseudo-random block of 512
//!   tokens seeded by `h` alone, so equal ids share a prefix exactly as in the trace; the
//!   prompt is truncated to `input_length` tokens; `timestamp` (ms) schedules the request
//!   (divided by `speedup`) unless `use_timestamps` is false, when the scenario's own load
//!   shape releases the requests.
//! - `jsonl`: one request a line, `{"prompt": ...}` or `{"messages": [...]}`, optional
//!   `max_tokens`, optional `conversation_id` and `turn` (lines of one conversation run in
//!   `turn` order, each resending the history with the engine's real replies).
//!
//! Files are read once, on the coordinator, and only as far as the requests needed; the
//! agents receive conversations (or, for a trace, the compact entries) with each round.

use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::rng::Rng;
use crate::tokenizer::{count_tokens, WORDS};
use crate::workload::{Conversation, MAX_OUTPUT_TOKENS};

/// Tokens per Mooncake hash block.
pub const MOONCAKE_BLOCK_TOKENS: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    Sharegpt,
    Mooncake,
    Jsonl,
}

/// The `dataset:` key of a scenario config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub format: DatasetFormat,
    pub path: PathBuf,
    /// Mooncake: schedule requests by their timestamps (default true).
    #[serde(default = "yes")]
    pub use_timestamps: bool,
    /// Mooncake: divide timestamps by this (2.0 replays twice as fast).
    #[serde(default = "one")]
    pub speedup: f64,
}

fn yes() -> bool {
    true
}

fn one() -> f64 {
    1.0
}

/// One line of a Mooncake trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEntry {
    pub timestamp: f64,
    pub input_length: u32,
    pub output_length: u32,
    pub hash_ids: Vec<u64>,
}

/// What a dataset holds, as sent to agents.
#[derive(Debug, Clone, PartialEq)]
pub enum Dataset {
    Conversations(Vec<Conversation>),
    Trace(Vec<TraceEntry>),
}

impl Dataset {
    pub fn requests(&self) -> usize {
        match self {
            Dataset::Conversations(c) => c.iter().map(|c| c.user_turns.len()).sum(),
            Dataset::Trace(t) => t.len(),
        }
    }
}

/// A dataset that cannot be read: its file, the line when one is at fault, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", .file.display(), .line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct DatasetError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

fn err(path: &Path, line: Option<usize>, msg: impl fmt::Display) -> DatasetError {
    DatasetError {
        file: path.to_owned(),
        line,
        message: msg.to_string(),
    }
}

/// Reads at most `limit` requests of a dataset (whole conversations; a conversation that
/// would cross the limit is cut to fit).
pub fn load(spec: &DatasetSpec, limit: usize) -> Result<Dataset, DatasetError> {
    let path = &spec.path;
    let file =
        std::fs::File::open(path).map_err(|e| err(path, None, format!("cannot open: {e}")))?;
    let reader = std::io::BufReader::new(file);
    match spec.format {
        DatasetFormat::Sharegpt => sharegpt(path, reader, limit).map(Dataset::Conversations),
        DatasetFormat::Jsonl => jsonl(path, reader, limit).map(Dataset::Conversations),
        DatasetFormat::Mooncake => trace(path, reader, limit).map(Dataset::Trace),
    }
}

#[derive(Deserialize)]
struct ShareGptEntry {
    #[serde(default)]
    conversations: Vec<ShareGptTurn>,
}

#[derive(Deserialize)]
struct ShareGptTurn {
    from: String,
    value: String,
}

/// Collects entries until enough requests are in hand, then skips the rest of the array
/// without keeping it.
struct FirstRequests(usize);

impl<'de> serde::de::DeserializeSeed<'de> for FirstRequests {
    type Value = Vec<Conversation>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V(usize);
        impl<'de> Visitor<'de> for V {
            type Value = Vec<Conversation>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of ShareGPT conversations")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<Conversation> = Vec::new();
                let mut requests = 0;
                while requests < self.0 {
                    let Some(e) = seq.next_element::<ShareGptEntry>()? else {
                        break;
                    };
                    let id = out.len() as u32;
                    if let Some(c) =
                        sharegpt_conversation(&e, id, requests as u32, self.0 - requests)
                    {
                        requests += c.user_turns.len();
                        out.push(c);
                    }
                }
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(out)
            }
        }
        d.deserialize_seq(V(self.0))
    }
}

/// A ShareGPT entry as a conversation: system prompt, human turns, and each human turn's
/// `max_tokens` from the length of the reply that follows it. `None` when it has no human
/// turn.
fn sharegpt_conversation(
    e: &ShareGptEntry,
    id: u32,
    first_request_id: u32,
    room: usize,
) -> Option<Conversation> {
    let mut system = None;
    let mut user_turns = Vec::new();
    let mut max_tokens = Vec::new();
    let mut turns = e.conversations.iter().peekable();
    while let Some(t) = turns.next() {
        match t.from.as_str() {
            "system" if user_turns.is_empty() => system = Some(t.value.clone()),
            "human" | "user" => {
                if user_turns.len() == room {
                    break;
                }
                let reply = turns.peek().filter(|n| {
                    matches!(
                        n.from.as_str(),
                        "gpt" | "assistant" | "chatgpt" | "bing" | "bard"
                    )
                });
                let len = reply
                    .map_or(128, |r| count_tokens(&r.value))
                    .clamp(1, MAX_OUTPUT_TOKENS as usize);
                user_turns.push(t.value.clone());
                max_tokens.push(len as u32);
            }
            _ => {}
        }
    }
    (!user_turns.is_empty()).then_some(Conversation {
        id,
        first_request_id,
        system,
        user_turns,
        max_tokens,
        think_time_ms: 0,
        prefix: Vec::new(),
        due_ms: None,
    })
}

fn sharegpt(
    path: &Path,
    reader: impl std::io::Read,
    limit: usize,
) -> Result<Vec<Conversation>, DatasetError> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_reader(reader);
    FirstRequests(limit)
        .deserialize(&mut de)
        .map_err(|e| err(path, Some(e.line()), format!("not ShareGPT JSON: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlLine {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<JsonlMessage>>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    conversation_id: Option<serde_json::Value>,
    #[serde(default)]
    turn: Option<u32>,
}

#[derive(Deserialize)]
struct JsonlMessage {
    role: String,
    content: String,
}

const DEFAULT_DATASET_MAX_TOKENS: u32 = 128;

fn jsonl(
    path: &Path,
    reader: impl BufRead,
    limit: usize,
) -> Result<Vec<Conversation>, DatasetError> {
    // Conversations in order of first appearance; a line without conversation_id is one.
    let mut order: Vec<String> = Vec::new();
    let mut lines: BTreeMap<String, Vec<(u32, usize, JsonlLine)>> = BTreeMap::new();
    let mut count = 0;
    for (i, line) in reader.lines().enumerate() {
        if count >= limit {
            break;
        }
        let line = line.map_err(|e| err(path, Some(i + 1), e))?;
        if line.trim().is_empty() {
            continue;
        }
        let l: JsonlLine = serde_json::from_str(&line).map_err(|e| {
            err(path, Some(i + 1), format!("{e} (a line is {{\"prompt\": ...}} or {{\"messages\": [...]}}, with optional max_tokens, conversation_id, turn)"))
        })?;
        if l.prompt.is_some() == l.messages.is_some() {
            return Err(err(
                path,
                Some(i + 1),
                "give exactly one of `prompt` and `messages`",
            ));
        }
        let key = match &l.conversation_id {
            Some(serde_json::Value::String(s)) => format!("s:{s}"),
            Some(v) => format!("v:{v}"),
            None => format!("line:{i}"),
        };
        if !lines.contains_key(&key) {
            order.push(key.clone());
        }
        let turn = l.turn.unwrap_or(u32::MAX);
        lines.entry(key).or_default().push((turn, i, l));
        count += 1;
    }
    let mut out = Vec::new();
    let mut next_id = 0;
    for key in order {
        let Some(mut ls) = lines.remove(&key) else {
            continue;
        };
        ls.sort_by_key(|(turn, i, _)| (*turn, *i));
        let mut c = Conversation {
            id: out.len() as u32,
            first_request_id: next_id,
            system: None,
            user_turns: Vec::new(),
            max_tokens: Vec::new(),
            think_time_ms: 0,
            prefix: Vec::new(),
            due_ms: None,
        };
        for (_, i, l) in ls {
            let max = l
                .max_tokens
                .unwrap_or(DEFAULT_DATASET_MAX_TOKENS)
                .clamp(1, MAX_OUTPUT_TOKENS);
            match (l.prompt, l.messages) {
                (Some(p), _) => c.user_turns.push(p),
                (None, Some(mut msgs)) => {
                    // A full message list: sent as it is, its last message the turn's own.
                    if !c.user_turns.is_empty() {
                        return Err(err(path, Some(i + 1), "a `messages` line carries its whole history: it cannot continue a conversation"));
                    }
                    let last = msgs
                        .pop()
                        .ok_or_else(|| err(path, Some(i + 1), "`messages` is empty"))?;
                    c.prefix = msgs.into_iter().map(|m| (m.role, m.content)).collect();
                    c.user_turns.push(last.content);
                }
                (None, None) => {}
            }
            c.max_tokens.push(max);
        }
        next_id += c.user_turns.len() as u32;
        out.push(c);
    }
    Ok(out)
}

fn trace(path: &Path, reader: impl BufRead, limit: usize) -> Result<Vec<TraceEntry>, DatasetError> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        if out.len() >= limit {
            break;
        }
        let line = line.map_err(|e| err(path, Some(i + 1), e))?;
        if line.trim().is_empty() {
            continue;
        }
        let e: TraceEntry = serde_json::from_str(&line).map_err(|e| {
            err(path, Some(i + 1), format!("{e} (a Mooncake trace line is {{\"timestamp\", \"input_length\", \"output_length\", \"hash_ids\"}})"))
        })?;
        out.push(e);
    }
    Ok(out)
}

/// One Mooncake hash block: 512 words seeded by the id alone.
fn block_text(id: u64) -> Vec<&'static str> {
    let mut r = Rng::derive(0x6d6f_6f6e_6361_6b65, &[id]);
    (0..MOONCAKE_BLOCK_TOKENS)
        .map(|_| WORDS[r.below(WORDS.len() as u64) as usize])
        .collect()
}

/// A trace as conversations of one turn each: the prompt is the concatenation of the hash
/// ids' blocks, truncated (or, if the ids are too few, extended with a block unique to the
/// request) to `input_length` tokens; due at `timestamp / speedup` from the first entry.
pub fn trace_conversations(
    entries: &[TraceEntry],
    use_timestamps: bool,
    speedup: f64,
) -> Vec<Conversation> {
    let t0 = entries
        .iter()
        .map(|e| e.timestamp)
        .fold(f64::INFINITY, f64::min);
    // Released in timestamp order (a file need not be sorted); ties keep file order.
    let mut order: Vec<&TraceEntry> = entries.iter().collect();
    order.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
    order
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let n = e.input_length.max(1) as usize;
            let mut words: Vec<&'static str> = Vec::with_capacity(n);
            for id in &e.hash_ids {
                if words.len() >= n {
                    break;
                }
                words.extend(block_text(*id));
            }
            let mut extra = 0u64;
            while words.len() < n {
                extra += 1;
                words.extend(block_text(u64::MAX - (i as u64) * 1024 - extra));
            }
            words.truncate(n);
            Conversation {
                id: i as u32,
                first_request_id: i as u32,
                system: None,
                user_turns: vec![words.join(" ")],
                max_tokens: vec![e.output_length.clamp(1, MAX_OUTPUT_TOKENS)],
                think_time_ms: 0,
                prefix: Vec::new(),
                due_ms: use_timestamps.then(|| (e.timestamp - t0) / speedup.max(1e-9)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_is_released_in_timestamp_order_relative_to_its_first() {
        let e = |ts: f64, len: u32| TraceEntry {
            timestamp: ts,
            input_length: len,
            output_length: 1,
            hash_ids: vec![],
        };
        // Two lines swapped in the file.
        let c = trace_conversations(&[e(1000.0, 3), e(500.0, 5), e(1500.0, 4)], true, 2.0);
        let due: Vec<f64> = c.iter().filter_map(|c| c.due_ms).collect();
        assert_eq!(due, vec![0.0, 250.0, 500.0]);
        let ids: Vec<u32> = c.iter().map(|c| c.first_request_id).collect();
        assert_eq!(ids, vec![0, 1, 2], "ids follow the release order");
        assert_eq!(c[0].user_turns[0].split_whitespace().count(), 5);
    }

    fn spec(format: DatasetFormat, path: PathBuf) -> DatasetSpec {
        DatasetSpec {
            format,
            path,
            use_timestamps: true,
            speedup: 2.0,
        }
    }

    /// A file holding `text`, removed when dropped.
    fn write(name: &str, text: &str) -> tempfile::TempPath {
        let f = tempfile::Builder::new()
            .prefix("kvbench-dataset-")
            .suffix(name)
            .tempfile()
            .expect("temp file");
        std::fs::write(f.path(), text).expect("write");
        f.into_temp_path()
    }

    #[test]
    fn sharegpt_turns_system_and_reply_lengths() {
        let p = write(
            "sg.json",
            r#"[{"id": "a", "conversations": [{"from": "system", "value": "be kind"}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello there you"}, {"from": "human", "value": "more"}, {"from": "gpt", "value": "ok"}]},
               {"id": "b", "conversations": [{"from": "gpt", "value": "no human here"}]},
               {"id": "c", "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}, {"from": "human", "value": "z"}]},
               {"id": "d", "conversations": [{"from": "human", "value": "never read"}]}]"#,
        );
        let Ok(Dataset::Conversations(c)) =
            load(&spec(DatasetFormat::Sharegpt, p.to_path_buf()), 3)
        else {
            panic!("loads")
        };
        assert_eq!(
            c.len(),
            2,
            "the gpt-only entry is skipped; the limit cuts the third"
        );
        assert_eq!(c[0].system.as_deref(), Some("be kind"));
        assert_eq!(c[0].user_turns, vec!["hi", "more"]);
        assert_eq!(c[0].max_tokens, vec![3, 1]);
        assert_eq!((c[1].first_request_id, c[1].user_turns.len()), (2, 1));
    }

    #[test]
    fn jsonl_conversations_prompts_and_messages() {
        let p = write(
            "d.jsonl",
            "{\"prompt\": \"one\", \"max_tokens\": 5}\n{\"conversation_id\": 7, \"turn\": 2, \"prompt\": \"second\"}\n{\"conversation_id\": 7, \"turn\": 1, \"prompt\": \"first\"}\n\n{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"u\"}]}\n",
        );
        let Ok(Dataset::Conversations(c)) = load(&spec(DatasetFormat::Jsonl, p.to_path_buf()), 100)
        else {
            panic!("loads")
        };
        assert_eq!(c.len(), 3);
        assert_eq!(
            (c[0].user_turns.clone(), c[0].max_tokens.clone()),
            (vec!["one".to_owned()], vec![5])
        );
        assert_eq!(c[1].user_turns, vec!["first", "second"]);
        assert_eq!(c[1].first_request_id, 1);
        assert_eq!(c[2].prefix, vec![("system".to_owned(), "s".to_owned())]);
        assert_eq!(c[2].user_turns, vec!["u"]);
        let bad = write(
            "bad.jsonl",
            "{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"messages\": []}\n",
        );
        let e = load(&spec(DatasetFormat::Jsonl, bad.to_path_buf()), 10).expect_err("both keys");
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("exactly one"), "{e}");
        assert!(e.to_string().contains("bad.jsonl:2: "), "{e}");
    }

    #[test]
    fn mooncake_blocks_share_prefixes_exactly_and_hit_lengths() {
        let entries = vec![
            TraceEntry {
                timestamp: 1000.0,
                input_length: 1100,
                output_length: 10,
                hash_ids: vec![1, 2, 3],
            },
            TraceEntry {
                timestamp: 3000.0,
                input_length: 700,
                output_length: 0,
                hash_ids: vec![1, 9],
            },
            TraceEntry {
                timestamp: 5000.0,
                input_length: 900,
                output_length: 5,
                hash_ids: vec![4],
            },
        ];
        let c = trace_conversations(&entries, true, 2.0);
        let words = |i: usize| {
            c[i].user_turns[0]
                .split(' ')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(words(0).len(), 1100);
        assert_eq!(words(1).len(), 700);
        assert_eq!(
            words(2).len(),
            900,
            "too few ids: extended to the input length"
        );
        assert_eq!(
            words(0)[..512],
            words(1)[..512],
            "hash id 1 is the same block"
        );
        assert_ne!(words(0)[512..700], words(1)[512..700]);
        assert_eq!(c[1].max_tokens, vec![1]);
        assert_eq!(
            c.iter().map(|c| c.due_ms).collect::<Vec<_>>(),
            vec![Some(0.0), Some(1000.0), Some(2000.0)]
        );
        assert!(trace_conversations(&entries, false, 1.0)
            .iter()
            .all(|c| c.due_ms.is_none()));
    }
}
