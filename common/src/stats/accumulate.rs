//! A round's statistics built as its records arrive, one record at a time, so that the
//! coordinator never has to hold a round's records: they go to disk as they come, and
//! what stays in memory grows with the round's length (1-second and 1-millisecond
//! buckets) and its concurrency (the first wave), not with its number of records.
//!
//! Means, standard deviations, minima and maxima are exact. Percentiles come from HDR
//! histograms (3 significant digits, so within 0.1 %), the same histograms the stats file
//! carries and that merge exactly across agents: a split round's percentiles are those of
//! all its records together.

use std::collections::{BTreeMap, BinaryHeap};

use crate::prefix_cache::DEFAULT_BLOCK_TOKENS;
use crate::record::{Outcome, RequestRecord};
use crate::results::{
    AgentHealth, FirstWave, LatencyMetric, LatencyStats, MetricStats, RoundStats,
};
use crate::stats::efficiency::EfficiencyAccumulator;
use crate::stats::{LatencyHistogram, StatsOptions, Summary};
use crate::telemetry::{
    CacheTiers, EngineMetricsSummary, RequestTiers, TelemetrySample, TelemetrySummary,
};

/// One latency metric's samples, as moments and a histogram.
#[derive(Debug, Clone, Default)]
pub struct MetricAccumulator {
    n: u64,
    mean: f64,
    /// Sum of squared deviations from the mean (Welford).
    m2: f64,
    min: f64,
    max: f64,
    hist: LatencyHistogram,
}

impl MetricAccumulator {
    /// Adds a sample; NaN is dropped.
    pub fn add(&mut self, v: f64) {
        if v.is_nan() {
            return;
        }
        if self.n == 0 {
            (self.min, self.max) = (v, v);
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.n += 1;
        let delta = v - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (v - self.mean);
        self.hist.record_ms(v);
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn histogram(&self) -> &LatencyHistogram {
        &self.hist
    }

    /// The `q`-th percentile (0..=100) from the histogram, within the exact minimum and
    /// maximum; `None` without samples.
    pub fn percentile(&self, q: f64) -> Option<f64> {
        (self.n > 0).then(|| self.hist.percentile_ms(q).clamp(self.min, self.max))
    }

    /// The figures with the configured percentiles and p99 (always reported: the stats
    /// file's contract).
    pub fn stats(&self, percentiles: &[f64]) -> MetricStats {
        let mut qs: Vec<f64> = percentiles.iter().copied().chain([99.0]).collect();
        qs.sort_by(f64::total_cmp);
        qs.dedup();
        let some = |v: f64| (self.n > 0).then_some(v);
        MetricStats {
            mean: some(self.mean),
            median: self.percentile(50.0),
            std: some((self.m2 / self.n.max(1) as f64).sqrt()),
            min: some(self.min),
            max: some(self.max),
            percentiles: qs.into_iter().map(|q| (q, self.percentile(q))).collect(),
        }
    }
}

/// The first `width` completed requests by release time (a closed loop's start-up burst)
/// kept apart from the rest as they arrive: only `width` of them are held at any time.
#[derive(Debug, Clone)]
struct WaveAccumulator {
    width: usize,
    /// The earliest released so far (a max-heap: the latest of them on top).
    first: BinaryHeap<Released>,
    steady_requests: u32,
    steady: MetricAccumulator,
    seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Released {
    scheduled_ms: f64,
    seq: u64,
    ttft_ms: Option<f64>,
}

impl PartialEq for Released {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Released {}
impl PartialOrd for Released {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Released {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.scheduled_ms
            .total_cmp(&other.scheduled_ms)
            .then(self.seq.cmp(&other.seq))
    }
}

impl WaveAccumulator {
    fn new(width: u32) -> WaveAccumulator {
        WaveAccumulator {
            width: (width as usize).max(1),
            first: BinaryHeap::new(),
            steady_requests: 0,
            steady: MetricAccumulator::default(),
            seq: 0,
        }
    }

    /// A completed, measured request.
    fn add(&mut self, r: &RequestRecord) {
        self.seq += 1;
        self.first.push(Released {
            scheduled_ms: r.scheduled_ms,
            seq: self.seq,
            ttft_ms: r.ttft_ms(),
        });
        if self.first.len() > self.width {
            if let Some(later) = self.first.pop() {
                self.steady_requests += 1;
                if let Some(t) = later.ttft_ms {
                    self.steady.add(t);
                }
            }
        }
    }

    fn finish(&self) -> Option<FirstWave> {
        if self.steady_requests == 0 {
            return None;
        }
        let f = Summary::of(self.first.iter().filter_map(|r| r.ttft_ms))?;
        let s = &self.steady;
        Some(FirstWave {
            requests: self.first.len() as u32,
            mean_ttft_ms: f.mean,
            median_ttft_ms: f.median(),
            p99_ttft_ms: f.percentile(99.0),
            steady_requests: self.steady_requests,
            steady_mean_ttft_ms: s.stats(&[]).mean?,
            steady_median_ttft_ms: s.percentile(50.0)?,
            steady_p99_ttft_ms: s.percentile(99.0)?,
        })
    }
}

/// Everything a round's statistics need, added record by record.
#[derive(Debug, Clone)]
pub struct RoundAccumulator {
    round: u32,
    opts: StatsOptions,
    warmup_requests: u32,
    measured: u32,
    completed: u32,
    outcomes: BTreeMap<Outcome, u32>,
    input_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
    cached_tokens_reported: u32,
    good_requests: u32,
    metrics: [MetricAccumulator; 5],
    /// Requests started minus ended, per millisecond (for the most at once).
    overlap: BTreeMap<i64, i32>,
    /// Output tokens per second of the round.
    tokens_per_s: BTreeMap<i64, f64>,
    wave: Option<WaveAccumulator>,
    first_scheduled_ms: f64,
    last_end_ms: f64,
    first_error: Option<String>,
    efficiency: EfficiencyAccumulator,
    /// The cached tokens by tier, from the requests that reported them.
    tiers: RequestTiers,
    /// Tokens per KV block where the engine does not report its own.
    block_fallback: u32,
}

impl RoundAccumulator {
    /// An empty round; `first_wave` is the width of a closed loop's start-up burst, whose
    /// requests are reported apart (`first_wave` in the stats).
    pub fn new(round: u32, opts: &StatsOptions, first_wave: Option<u32>) -> RoundAccumulator {
        RoundAccumulator {
            round,
            opts: opts.clone(),
            warmup_requests: 0,
            measured: 0,
            completed: 0,
            outcomes: BTreeMap::new(),
            input_tokens: 0,
            output_tokens: 0,
            cached_tokens: 0,
            cached_tokens_reported: 0,
            good_requests: 0,
            metrics: Default::default(),
            overlap: BTreeMap::new(),
            tokens_per_s: BTreeMap::new(),
            wave: first_wave.map(WaveAccumulator::new),
            first_scheduled_ms: f64::INFINITY,
            last_end_ms: 0.0,
            first_error: None,
            efficiency: EfficiencyAccumulator::default(),
            tiers: RequestTiers::default(),
            block_fallback: DEFAULT_BLOCK_TOKENS,
        }
    }

    /// Perfect-cache hits are counted in `block`-token blocks where the engine does not say
    /// its block size (its kind's: see [`crate::prefix_cache::block_tokens`]).
    pub fn with_block_fallback(mut self, block: u32) -> Self {
        self.block_fallback = block.max(1);
        self
    }

    /// Failed requests count in `failed` and `outcomes` only: they never enter latency or
    /// throughput figures. Warmup requests count nowhere but `warmup_requests`.
    pub fn add(&mut self, r: &RequestRecord) {
        self.first_scheduled_ms = self.first_scheduled_ms.min(r.scheduled_ms);
        self.last_end_ms = self.last_end_ms.max(r.end_ms);
        if r.outcome != Outcome::Ok && self.first_error.is_none() {
            self.first_error = Some(r.error.clone());
        }
        self.efficiency.add(r);
        if r.warmup {
            self.warmup_requests += 1;
            return;
        }
        self.measured += 1;
        *self.outcomes.entry(r.outcome).or_insert(0) += 1;
        *self.overlap.entry(r.sent_ms.floor() as i64).or_insert(0) += 1;
        *self.overlap.entry(r.end_ms.floor() as i64).or_insert(0) -= 1;
        if r.outcome != Outcome::Ok {
            return;
        }
        self.completed += 1;
        self.input_tokens += u64::from(r.input_tokens());
        self.output_tokens += u64::from(r.generated_tokens());
        if let Some(c) = r.cached_tokens {
            self.cached_tokens += u64::from(c);
            self.cached_tokens_reported += 1;
        }
        if let Some(d) = &r.cached_tokens_details {
            self.tiers.add(d);
        }
        if self.opts.goodput.is_some_and(|g| g.is_good(r)) {
            self.good_requests += 1;
        }
        for (m, acc) in LatencyMetric::ALL.iter().zip(&mut self.metrics) {
            match m {
                LatencyMetric::Ttft => r.ttft_ms().into_iter().for_each(|v| acc.add(v)),
                LatencyMetric::Tpot => r.tpot_ms().into_iter().for_each(|v| acc.add(v)),
                LatencyMetric::Itl => r.itls_ms().for_each(|v| acc.add(v)),
                LatencyMetric::E2el => acc.add(r.e2el_ms()),
                LatencyMetric::Queue => acc.add(r.queue_ms),
            }
        }
        if !r.chunk_offsets_ms.is_empty() {
            let per_chunk = f64::from(r.generated_tokens()) / r.chunk_offsets_ms.len() as f64;
            for off in &r.chunk_offsets_ms {
                let t = r.sent_ms + off;
                *self
                    .tokens_per_s
                    .entry((t / 1000.0).floor() as i64)
                    .or_insert(0.0) += per_chunk;
            }
        }
        if let Some(w) = &mut self.wave {
            w.add(r);
        }
    }

    /// The error of the first failed request, if any failed.
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// Seconds from the first scheduled request to the last end (for a round whose agent
    /// could not say how long it ran).
    pub fn span_s(&self) -> f64 {
        let (start, end) = (self.first_scheduled_ms, self.last_end_ms);
        if start.is_finite() && end > start {
            (end - start) / 1000.0
        } else {
            0.0
        }
    }

    /// Records seen, warmups included.
    pub fn records(&self) -> u32 {
        self.measured + self.warmup_requests
    }

    /// The round's statistics from its records alone.
    pub fn finish_records(&self, duration_s: f64) -> RoundStats {
        self.finish(duration_s, &[], None)
    }

    /// The round's statistics, complete: its records, its telemetry and the agent's health.
    pub fn finish(
        &self,
        duration_s: f64,
        telemetry: &[TelemetrySample],
        health: Option<&AgentHealth>,
    ) -> RoundStats {
        let per_s = |x: f64| {
            if duration_s > 0.0 {
                x / duration_s
            } else {
                0.0
            }
        };
        let mut latency = LatencyStats::default();
        let mut histograms = BTreeMap::new();
        for (m, acc) in LatencyMetric::ALL.iter().zip(&self.metrics) {
            if let Some(enc) = acc.histogram().to_base64() {
                histograms.insert(m.key().to_owned(), enc);
            }
            *latency.metric_mut(*m) = acc.stats(&self.opts.percentiles);
        }
        let good = self.opts.goodput.map(|_| self.good_requests);
        let engine_metrics = EngineMetricsSummary::of(telemetry);
        // The engine's block size where it says, else its kind's.
        let block = engine_metrics
            .as_ref()
            .and_then(|m| m.block_size)
            .filter(|b| *b >= 1.0 && *b <= f64::from(u32::MAX))
            .map_or(self.block_fallback, |b| b as u32);
        let cache_efficiency = self.efficiency.finish(
            block,
            engine_metrics.as_ref().and_then(|m| m.prefix_cache_hits),
        );
        RoundStats {
            round: self.round,
            completed: self.completed,
            failed: self.measured - self.completed,
            outcomes: self.outcomes.clone(),
            duration: duration_s,
            request_throughput: per_s(f64::from(self.completed)),
            output_throughput: per_s(self.output_tokens as f64),
            total_token_throughput: per_s((self.input_tokens + self.output_tokens) as f64),
            total_input_tokens: self.input_tokens,
            total_output_tokens: self.output_tokens,
            cached_tokens: self.cached_tokens,
            cache_hit_ratio: (self.cached_tokens_reported > 0 && self.input_tokens > 0)
                .then(|| self.cached_tokens as f64 / self.input_tokens as f64),
            cached_tokens_reported: self.cached_tokens_reported,
            max_concurrent_requests: max_overlap(&self.overlap),
            max_output_tokens_per_s: self.tokens_per_s.values().copied().fold(0.0, f64::max),
            good_requests: good,
            request_goodput: good.map(|g| per_s(f64::from(g))),
            warmup_requests: self.warmup_requests,
            generator_saturated: health.is_some_and(|h| h.generator_saturated),
            agent_health: health.cloned(),
            histograms,
            engine_metrics,
            cache_efficiency,
            cache_tiers: CacheTiers::of(telemetry, Some(self.tiers.clone())),
            telemetry: TelemetrySummary::of(telemetry, self.output_tokens),
            per_agent: BTreeMap::new(),
            resumed: Vec::new(),
            first_wave: self.wave.as_ref().and_then(WaveAccumulator::finish),
            started_at_us: None,
            latency,
        }
    }
}

/// The most requests in flight at once, at millisecond resolution: a request counts from
/// the millisecond it was sent to the one it ended in (one that ends in the millisecond
/// another starts does not overlap it).
fn max_overlap(deltas: &BTreeMap<i64, i32>) -> u32 {
    let mut cur = 0i32;
    let mut max = 0i32;
    for d in deltas.values() {
        cur += d;
        max = max.max(cur);
    }
    // A request shorter than a millisecond still ran.
    max.max(i32::from(!deltas.is_empty())) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u32, sent: f64, ttft: f64, end: f64) -> RequestRecord {
        RequestRecord {
            seq: None,
            chunk_offsets_ms: vec![ttft, (ttft + end - sent) / 2.0, end - sent],
            output_tokens: Some(3),
            output_chunks: 3,
            cached_tokens: Some(50),
            ..RequestRecord::for_test(id, sent, ttft, end)
        }
    }

    proptest::proptest! {
        /// Moments are exact; each percentile is within the histogram's 0.1 % (and its
        /// 1 us unit) of the exact one (interpolated between the closest ranks), and never
        /// outside the samples' range.
        #[test]
        fn metric_figures_match_the_samples(
            samples in proptest::collection::vec(0.0f64..100_000.0, 1..300),
            q in 0.0f64..=100.0,
        ) {
            let mut acc = MetricAccumulator::default();
            samples.iter().for_each(|v| acc.add(*v));
            let exact = Summary::of(samples.iter().copied()).expect("samples");
            let st = acc.stats(&[q]);
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
            proptest::prop_assert!(close(st.mean.unwrap_or(f64::NAN), exact.mean));
            proptest::prop_assert!(close(st.std.unwrap_or(f64::NAN), exact.std));
            proptest::prop_assert_eq!(st.min, Some(exact.min));
            proptest::prop_assert_eq!(st.max, Some(exact.max));
            let (p, want) = (st.percentile(q).expect("a percentile"), exact.percentile(q));
            proptest::prop_assert!(p >= exact.min && p <= exact.max);
            proptest::prop_assert!(
                (p - want).abs() <= want * 0.001 + 0.001,
                "p{} = {} against {}", q, p, want
            );
        }

        /// The order in which records arrive changes nothing.
        #[test]
        fn arrival_order_does_not_matter(
            times in proptest::collection::vec((0.0f64..5_000.0, 1.0f64..500.0, 1.0f64..2_000.0), 1..60),
            seed in 0u64..1000,
        ) {
            let records: Vec<RequestRecord> = times
                .iter()
                .enumerate()
                .map(|(i, (sent, ttft, rest))| rec(i as u32, *sent, *ttft, sent + ttft + rest))
                .collect();
            let mut shuffled = records.clone();
            let mut rng = crate::rng::Rng::new(seed);
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let opts = StatsOptions::default();
            let (a, b) = (
                RoundStats::from_records(1, 10.0, &records, &opts),
                RoundStats::from_records(1, 10.0, &shuffled, &opts),
            );
            proptest::prop_assert_eq!(&a.histograms, &b.histograms);
            proptest::prop_assert_eq!(a.max_concurrent_requests, b.max_concurrent_requests);
            proptest::prop_assert_eq!(a.max_output_tokens_per_s, b.max_output_tokens_per_s);
            for m in LatencyMetric::ALL {
                let (x, y) = (a.latency.metric(m), b.latency.metric(m));
                proptest::prop_assert_eq!(&x.percentiles, &y.percentiles);
                proptest::prop_assert!((x.mean.unwrap_or(0.0) - y.mean.unwrap_or(0.0)).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn back_to_back_requests_do_not_overlap_but_a_short_one_counts() {
        let opts = StatsOptions::default();
        // A closed loop of one: each request starts as the previous one ends.
        let chain = [rec(0, 0.0, 1.0, 10.2), rec(1, 10.7, 1.0, 20.0)];
        assert_eq!(
            RoundStats::from_records(1, 1.0, &chain, &opts).max_concurrent_requests,
            1
        );
        let short = [rec(0, 3.1, 0.1, 3.5)];
        assert_eq!(
            RoundStats::from_records(1, 1.0, &short, &opts).max_concurrent_requests,
            1
        );
    }

    #[test]
    fn the_first_wave_holds_only_its_width() {
        let mut acc = RoundAccumulator::new(1, &StatsOptions::default(), Some(4));
        // Released out of order: the four earliest are the wave, whatever the arrival.
        for (i, sent) in [9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0]
            .iter()
            .enumerate()
        {
            let ttft = if *sent <= 4.0 { 100.0 } else { 10.0 };
            acc.add(&rec(i as u32, *sent, ttft, sent + 200.0));
            assert!(acc.wave.as_ref().is_some_and(|w| w.first.len() <= 4));
        }
        let w = acc.finish_records(1.0).first_wave.expect("a wave");
        assert_eq!((w.requests, w.steady_requests), (4, 5));
        assert_eq!(w.mean_ttft_ms, 100.0);
        assert!((w.steady_mean_ttft_ms - 10.0).abs() < 1e-9);
    }
}
