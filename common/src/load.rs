//! Load shapes: how requests are released over a round.
//!
//! - **closed loop** (`concurrency`, the seed's key): that many requests in flight; a new one
//!   starts when one ends;
//! - **open loop** (`request_rate` in requests/s, `inf` = all at once): arrivals follow a
//!   gamma process of shape `burstiness` (1.0 = Poisson; lower is burstier) and scale
//!   `1 / (rate * burstiness)`, vLLM's definition, optionally capped at `max_concurrency`
//!   in flight (time spent waiting for the cap is the record's `queue_ms`);
//! - **ramp-up** (`ramp_up: {strategy, start_rate, end_rate}`): an open loop whose rate moves
//!   from `start_rate` to `end_rate`, linearly or exponentially, with the round's progress
//!   (share of requests sent, or of the duration elapsed).
//!
//! A round's length is its number of requests, or `duration_s`. The arrival schedule is a
//! function of the seed only, so every round of a scenario releases requests at the same
//! offsets.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// How the rate moves during a ramp-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RampStrategy {
    Linear,
    Exponential,
}

/// The rate of an open loop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Rate {
    /// Requests per second; `f64::INFINITY` sends everything at once.
    Fixed(f64),
    Ramp {
        strategy: RampStrategy,
        start: f64,
        end: f64,
    },
}

impl Rate {
    /// The same shape at `factor` times the rate (infinity stays infinity).
    pub fn scaled(self, factor: f64) -> Rate {
        match self {
            Rate::Fixed(r) => Rate::Fixed(r * factor),
            Rate::Ramp {
                strategy,
                start,
                end,
            } => Rate::Ramp {
                strategy,
                start: start * factor,
                end: end * factor,
            },
        }
    }

    /// The rate at `progress` (0..=1) through the round.
    pub fn at(&self, progress: f64) -> f64 {
        let p = progress.clamp(0.0, 1.0);
        match *self {
            Rate::Fixed(r) => r,
            Rate::Ramp {
                strategy: RampStrategy::Linear,
                start,
                end,
            } => start + (end - start) * p,
            Rate::Ramp {
                strategy: RampStrategy::Exponential,
                start,
                end,
            } => start * (end / start).powf(p),
        }
    }
}

/// How requests are released.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Arrivals {
    Closed {
        concurrency: u32,
    },
    Open {
        rate: Rate,
        burstiness: f64,
        max_concurrency: Option<u32>,
    },
}

/// The whole load of a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSpec {
    pub arrivals: Arrivals,
    /// Stop releasing requests after this many seconds (else after the request set).
    pub duration_s: Option<f64>,
    /// Requests sent before the measured ones and excluded from statistics.
    pub warmup_requests: u32,
    pub ttft_timeout_s: f64,
    pub idle_timeout_s: f64,
}

impl LoadSpec {
    /// Agent `index`'s part, of `count` agents running one scenario together (`placement:
    /// split`): a closed loop's concurrency and an open loop's cap divided as evenly as whole
    /// numbers allow (at least 1 each), an open loop's rate divided by `count`. Duration,
    /// warmups (each agent warms its own engine) and timeouts stay as they are.
    pub fn share(&self, index: u32, count: u32) -> LoadSpec {
        let arrivals = match self.arrivals {
            Arrivals::Closed { concurrency } => Arrivals::Closed {
                concurrency: part(concurrency, index, count),
            },
            Arrivals::Open {
                rate,
                burstiness,
                max_concurrency,
            } => Arrivals::Open {
                rate: rate.scaled(1.0 / f64::from(count.max(1))),
                burstiness,
                max_concurrency: max_concurrency.map(|c| part(c, index, count)),
            },
        };
        LoadSpec {
            arrivals,
            ..self.clone()
        }
    }
}

/// Share `index` of `total` divided between `count`: the first `total % count` get one
/// more; never 0 (an agent with a share of the requests needs a slot to send them).
pub fn part(total: u32, index: u32, count: u32) -> u32 {
    let count = count.max(1);
    (total / count + u32::from(index < total % count)).max(1)
}

/// Arrival offsets (seconds from the round's start) of an open loop.
#[derive(Debug, Clone)]
pub struct Schedule {
    rng: Rng,
    rate: Rate,
    burstiness: f64,
    total: Option<u32>,
    duration_s: Option<f64>,
    index: u32,
    t: f64,
}

impl Schedule {
    /// `total` (request count) or `duration_s` sets the progress a ramp-up follows.
    pub fn new(
        seed: u64,
        rate: Rate,
        burstiness: f64,
        total: Option<u32>,
        duration_s: Option<f64>,
    ) -> Self {
        Schedule {
            rng: Rng::derive(seed, &[0x6172_7269_7661_6c73]),
            rate,
            burstiness,
            total,
            duration_s,
            index: 0,
            t: 0.0,
        }
    }

    /// The next arrival's offset in seconds; the first request arrives at 0.
    pub fn next_offset(&mut self) -> f64 {
        if self.index > 0 {
            let progress = match (self.duration_s, self.total) {
                (Some(d), _) if d > 0.0 => self.t / d,
                (_, Some(n)) if n > 1 => f64::from(self.index) / f64::from(n - 1),
                _ => 0.0,
            };
            let rate = self.rate.at(progress);
            if rate.is_finite() && rate > 0.0 {
                let k = self.burstiness;
                self.t += self.rng.gamma(k, 1.0 / (rate * k));
            }
        }
        self.index += 1;
        self.t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Split shares add up to the whole where there is at least one per agent.
        #[test]
        fn shares_add_up(total in 1u32..5000, count in 1u32..64) {
            let parts: Vec<u32> = (0..count).map(|i| part(total, i, count)).collect();
            let sum: u32 = parts.iter().sum();
            proptest::prop_assert_eq!(sum, total.max(count));
            let (lo, hi) = (parts.iter().min().unwrap(), parts.iter().max().unwrap());
            proptest::prop_assert!(hi - lo <= 1);
        }
    }

    #[test]
    fn a_split_load_divides_concurrency_rate_and_cap() {
        let closed = LoadSpec {
            arrivals: Arrivals::Closed { concurrency: 10 },
            duration_s: None,
            warmup_requests: 2,
            ttft_timeout_s: 1.0,
            idle_timeout_s: 1.0,
        };
        let c: Vec<Arrivals> = (0..3).map(|i| closed.share(i, 3).arrivals).collect();
        assert_eq!(
            c,
            [4, 3, 3].map(|concurrency| Arrivals::Closed { concurrency })
        );
        assert_eq!(closed.share(1, 3).warmup_requests, 2);
        let open = LoadSpec {
            arrivals: Arrivals::Open {
                rate: Rate::Fixed(30.0),
                burstiness: 1.0,
                max_concurrency: Some(4),
            },
            ..closed
        };
        assert_eq!(
            open.share(2, 3).arrivals,
            Arrivals::Open {
                rate: Rate::Fixed(10.0),
                burstiness: 1.0,
                max_concurrency: Some(1)
            }
        );
    }

    #[test]
    fn a_scaled_rate_keeps_its_shape() {
        assert_eq!(Rate::Fixed(20.0).scaled(0.2), Rate::Fixed(4.0));
        assert_eq!(
            Rate::Fixed(f64::INFINITY).scaled(0.2),
            Rate::Fixed(f64::INFINITY)
        );
        let ramp = Rate::Ramp {
            strategy: RampStrategy::Linear,
            start: 10.0,
            end: 50.0,
        }
        .scaled(0.5);
        assert_eq!((ramp.at(0.0), ramp.at(1.0)), (5.0, 25.0));
    }

    fn offsets(rate: Rate, k: f64, n: u32) -> Vec<f64> {
        let mut s = Schedule::new(5, rate, k, Some(n), None);
        (0..n).map(|_| s.next_offset()).collect()
    }

    #[test]
    fn poisson_rate_is_met_and_deterministic() {
        let o = offsets(Rate::Fixed(100.0), 1.0, 20_001);
        assert_eq!(o, offsets(Rate::Fixed(100.0), 1.0, 20_001));
        let achieved = 20_000.0 / o[20_000];
        assert!((achieved - 100.0).abs() < 2.5, "{achieved} req/s");
        assert!(o.windows(2).all(|w| w[1] >= w[0]));
    }

    #[test]
    fn burstiness_changes_spread_not_rate() {
        let gaps = |k: f64| {
            let o = offsets(Rate::Fixed(10.0), k, 20_001);
            let g: Vec<f64> = o.windows(2).map(|w| w[1] - w[0]).collect();
            let mean = g.iter().sum::<f64>() / g.len() as f64;
            let cv =
                (g.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / g.len() as f64).sqrt() / mean;
            (mean, cv)
        };
        let (m1, cv1) = gaps(1.0);
        let (m2, cv2) = gaps(0.25);
        assert!(
            (m1 - 0.1).abs() < 0.004 && (m2 - 0.1).abs() < 0.006,
            "{m1} {m2}"
        );
        // Gamma's coefficient of variation is 1/sqrt(shape): 1 for Poisson, 2 for 0.25.
        assert!((cv1 - 1.0).abs() < 0.05, "{cv1}");
        assert!((cv2 - 2.0).abs() < 0.15, "{cv2}");
    }

    #[test]
    fn infinite_rate_sends_everything_at_once() {
        assert!(offsets(Rate::Fixed(f64::INFINITY), 1.0, 50)
            .iter()
            .all(|t| *t == 0.0));
    }

    #[test]
    fn ramps_move_from_start_to_end() {
        let lin = Rate::Ramp {
            strategy: RampStrategy::Linear,
            start: 1.0,
            end: 9.0,
        };
        assert_eq!((lin.at(0.0), lin.at(0.5), lin.at(1.0)), (1.0, 5.0, 9.0));
        let exp = Rate::Ramp {
            strategy: RampStrategy::Exponential,
            start: 1.0,
            end: 100.0,
        };
        assert!((exp.at(0.5) - 10.0).abs() < 1e-9);
        // Later gaps are shorter than early ones on an upward ramp.
        let o = offsets(
            Rate::Ramp {
                strategy: RampStrategy::Linear,
                start: 2.0,
                end: 200.0,
            },
            1.0,
            2001,
        );
        let early = o[200] - o[0];
        let late = o[2000] - o[1800];
        assert!(late * 5.0 < early, "early {early} late {late}");
    }
}
