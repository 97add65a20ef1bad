//! Statistics computed from request records: sample summaries and percentiles
//! ([`summary`]), latency histograms ([`histogram`]), a round's statistics built record by
//! record ([`accumulate`]), and means, confidence intervals and the bootstrap
//! ([`intervals`]); capacity at an objective ([`capacity`]) and hits against a perfect
//! cache ([`efficiency`]). The stats file's layout is [`crate::results`]; the cold-start verdict
//! is [`crate::isolation`].
//!
//! May import: std, serde, hdrhistogram, statrs, the records it reads ([`crate::record`])
//! and the perfect cache's arithmetic ([`crate::prefix_cache`]). Never an async runtime.

pub mod accumulate;
pub mod capacity;
pub mod efficiency;
pub mod histogram;
pub mod intervals;
pub mod summary;

pub use histogram::LatencyHistogram;
pub use summary::*;
