//! What people read: the console ([`console`]) and the JSON Lines stream ([`json_lines`])
//! from the engine's events, the reports and charts ([`report`]) and comparisons of runs
//! ([`compare`]) from `output`'s saved files.
//!
//! May import: `kvbench_common`, [`crate::engine::events`] and
//! [`crate::engine::outcome`], and [`crate::output`]. Never the CLI, the agents or the
//! rest of the engine. Renderers write into a `Write` or return text; charts are drawn
//! synchronously, so async callers run them on a blocking thread.

pub mod compare;
pub mod console;
pub mod json_lines;
pub mod report;
