//! A small, stable pseudo-random generator (SplitMix64). Workloads must be identical for a
//! given seed across releases and platforms, so the generator is ours rather than a crate's.

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator derived from a seed and a list of stream identifiers, so that separate
    /// parts of a workload (documents, questions, rounds) draw independent sequences.
    pub fn derive(seed: u64, stream: &[u64]) -> Self {
        let mut h = mix(seed ^ 0x6b76_6265_6e63_6821);
        for s in stream {
            h = mix(h ^ s.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        Rng(h)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Rng {
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Gamma(shape, scale) by Marsaglia and Tsang's method (shape > 0, scale > 0).
    pub fn gamma(&mut self, shape: f64, scale: f64) -> f64 {
        if shape < 1.0 {
            // Gamma(k) = Gamma(k + 1) * U^(1/k)
            let u = 1.0 - self.unit();
            return self.gamma(shape + 1.0, scale) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = 1.0 - self.unit();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v * scale;
            }
        }
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_streams_differ() {
        let a: Vec<u64> = (0..5).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut x = Rng::derive(7, &[1]);
        let mut y = Rng::derive(7, &[2]);
        assert_ne!(x.next_u64(), y.next_u64());
    }

    #[test]
    fn gamma_has_the_right_mean_and_variance() {
        for (shape, scale) in [(1.0, 0.5), (0.3, 2.0), (4.0, 0.25)] {
            let mut r = Rng::new(11);
            let n = 100_000;
            let xs: Vec<f64> = (0..n).map(|_| r.gamma(shape, scale)).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let (m, v) = (shape * scale, shape * scale * scale);
            assert!(
                (mean - m).abs() < 0.02 * m.max(0.1),
                "shape {shape}: mean {mean} vs {m}"
            );
            assert!(
                (var - v).abs() < 0.06 * v.max(0.1),
                "shape {shape}: var {var} vs {v}"
            );
            assert!(xs.iter().all(|x| *x >= 0.0));
        }
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::new(1);
        for n in [1u64, 2, 3, 17, 1000] {
            for _ in 0..1000 {
                assert!(r.below(n) < n);
            }
        }
        for _ in 0..1000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
