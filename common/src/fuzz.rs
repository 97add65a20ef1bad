//! A small mutation fuzzer for the parsers of untrusted input (an engine's SSE stream and
//! metrics, a plan file, an agent's messages): each target's tests feed it seeds, it
//! mutates them (bit flips, byte edits, splices, cut-offs, random runs) for a time budget
//! and fails on the first panic, printing the input. The budget is `KVBENCH_FUZZ_SECS`
//! (1 s by default, so that the test suite stays fast; `scripts/fuzz.sh` gives each target
//! 10 minutes). Deterministic for a given `KVBENCH_FUZZ_SEED`.

use std::time::{Duration, Instant};

/// What a fuzzing session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fuzzed {
    pub inputs: u64,
    pub seed: u64,
}

/// The budget from `KVBENCH_FUZZ_SECS` (default 1 s).
pub fn budget() -> Duration {
    std::env::var("KVBENCH_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(1), Duration::from_secs_f64)
}

use crate::rng::Rng;

/// In `0..n` (`n` > 0).
fn below(rng: &mut Rng, n: usize) -> usize {
    rng.below(n.max(1) as u64) as usize
}

/// Bytes that make parsers take their odd paths.
const INTERESTING: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b"\r",
    b":",
    b"data:",
    b"data: ",
    b"[DONE]",
    b"{",
    b"}",
    b"\"",
    b"\\",
    b"#",
    b" ",
    b"\t",
    b"-",
    b"1e309",
    b"NaN",
    b"+Inf",
    b"-0",
    b"\x00",
    b"\xff",
    b"\xe2\x82",
    b"{{",
    b"- ",
    b"...",
    b"&a",
    b"*a",
    b"!!",
    b"null",
    b"18446744073709551616",
];

/// One mutation of `input` (seeds are spliced in from `seeds`).
pub fn mutate(rng: &mut Rng, input: &[u8], seeds: &[&[u8]]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + below(rng, 4) {
        match below(rng, 8) {
            0 if !out.is_empty() => {
                let i = below(rng, out.len());
                out[i] ^= 1 << below(rng, 8);
            }
            1 if !out.is_empty() => {
                let i = below(rng, out.len());
                out[i] = rng.next_u64() as u8;
            }
            2 if !out.is_empty() => {
                let i = below(rng, out.len());
                let n = 1 + below(rng, 8.min(out.len() - i));
                out.drain(i..i + n);
            }
            3 => {
                let i = below(rng, out.len() + 1);
                let piece = INTERESTING[below(rng, INTERESTING.len())];
                out.splice(i..i, piece.iter().copied());
            }
            4 if !seeds.is_empty() => {
                let other = seeds[below(rng, seeds.len())];
                if !other.is_empty() {
                    let a = below(rng, other.len());
                    let b = a + below(rng, other.len() - a) + 1;
                    let i = below(rng, out.len() + 1);
                    out.splice(i..i, other[a..b].iter().copied());
                }
            }
            5 if !out.is_empty() => out.truncate(below(rng, out.len())),
            6 => {
                let i = below(rng, out.len() + 1);
                let n = below(rng, 16);
                let run: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                out.splice(i..i, run);
            }
            _ if !out.is_empty() => {
                // Repeat a slice: long lines, deep nesting.
                let a = below(rng, out.len());
                let b = (a + 1 + below(rng, 32)).min(out.len());
                let piece = out[a..b].repeat(1 + below(rng, 64));
                out.splice(a..a, piece);
            }
            _ => out.push(rng.next_u64() as u8),
        }
    }
    out.truncate(1 << 16);
    out
}

/// Feeds `target` the seeds, then mutations of them, until the budget is spent; panics
/// (with the input, escaped) on the first input the target panics on.
pub fn run(name: &str, seeds: &[&[u8]], mut target: impl FnMut(&[u8])) -> Fuzzed {
    let seed = std::env::var("KVBENCH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b76_6265_6e63_6821);
    let mut rng = Rng::new(seed);
    let rng = &mut rng;
    let deadline = Instant::now() + budget();
    let mut inputs = 0u64;
    let mut corpus: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut check = |input: &[u8], inputs: &mut u64| {
        *inputs += 1;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(input)));
        if result.is_err() {
            panic!(
                "{name}: panicked on input {:?} (after {inputs} inputs, KVBENCH_FUZZ_SEED={seed})",
                String::from_utf8_lossy(input)
            );
        }
    };
    for s in seeds {
        check(s, &mut inputs);
    }
    while Instant::now() < deadline {
        for _ in 0..64 {
            let base = &corpus[below(rng, corpus.len())];
            let input = mutate(rng, base, seeds);
            check(&input, &mut inputs);
            // Keep some mutants to mutate further (a bounded corpus).
            if below(rng, 16) == 0 {
                if corpus.len() < 256 {
                    corpus.push(input);
                } else {
                    let i = below(rng, corpus.len());
                    corpus[i] = input;
                }
            }
        }
    }
    eprintln!("fuzz {name}: {inputs} inputs, no panic (seed {seed})");
    Fuzzed { inputs, seed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_target_is_caught_with_its_input() {
        let caught = std::panic::catch_unwind(|| {
            run("demo", &[b"ok"], |input| {
                assert!(!input.contains(&b'!'), "bang");
            })
        });
        let message = caught
            .err()
            .and_then(|e| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(message.contains("demo: panicked on input"), "{message}");
    }

    #[test]
    fn mutations_stay_bounded_and_vary() {
        let mut rng = Rng::new(7);
        let seeds: [&[u8]; 1] = [b"data: {\"a\": 1}\n\n"];
        let outs: std::collections::BTreeSet<Vec<u8>> = (0..200)
            .map(|_| mutate(&mut rng, seeds[0], &seeds))
            .collect();
        assert!(outs.len() > 100, "mutations vary");
        assert!(outs.iter().all(|o| o.len() <= 1 << 16));
    }
}
