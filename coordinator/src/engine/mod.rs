//! The run: a plan scenario by scenario ([`plan_run`]), one scenario round by round
//! ([`scenario`]), the isolation step before it ([`isolation`]), a scenario split across
//! agents ([`split`]), what happened as events ([`events`]) and how it ended
//! ([`outcome`]); the files a plan reads ([`inputs`]), its time estimate ([`estimate`]) and
//! what a workload would send ([`inspect`]).
//!
//! May import: `kvbench_common`, [`crate::agents`] and [`crate::output`]. Never
//! `present` or `cli`: the engine prints nothing, tells everything as [`events::RunEvent`]s,
//! and writes files only through `output`.

pub mod estimate;
pub mod events;
pub mod inputs;
pub mod inspect;
pub mod isolation;
pub mod outcome;
pub mod plan_run;
pub mod resume;
pub mod scenario;
pub mod split;
