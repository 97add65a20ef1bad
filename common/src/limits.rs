//! The one trust boundary: how big a workload and a load may be. The plan loader checks a
//! plan against these limits, and an agent checks every round it is asked to run against
//! them again before it allocates anything (a plan, or a peer, asking for
//! `document_tokens: 2000000000` gets an error naming the field and the limit, never an
//! agent that runs out of memory).
//!
//! | limit | value | why |
//! |---|---|---|
//! | [`MAX_REQUESTS`] | 1,048,576 requests per round (and warmup requests) | one record each, kept until the round ends |
//! | [`MAX_SECTION_TOKENS`] | 2,097,152 tokens per prompt section (document, context, system prompt, ...) | beyond the longest context of any model |
//! | [`MAX_POOL_TOKENS`] | 134,217,728 prompt tokens generated per request set | about 1 GB of prompt text held by the agent |
//! | [`MAX_IN_FLIGHT`] | 65,536 requests in flight (a duration-limited closed loop's `concurrency`, `max_concurrency`) | one connection each; a count-limited closed loop never starts more workers than it has requests, so any `concurrency` is accepted there |
//! | [`MAX_SHARES`] | 1,024 agents sharing one `split` scenario | |
//! | [`MAX_SECONDS`] | 7 days (`duration_s`, timeouts) | a round that long is a mistake |
//! | [`crate::workload::MAX_OUTPUT_TOKENS`] | 1,048,576 output tokens per request | |

use crate::load::{Arrivals, LoadSpec, Rate};
use crate::workload::{WorkloadKind, WorkloadSpec, MAX_OUTPUT_TOKENS};

pub const MAX_REQUESTS: u32 = 1 << 20;
pub const MAX_SECTION_TOKENS: u32 = 1 << 21;
pub const MAX_POOL_TOKENS: u64 = 1 << 27;
pub const MAX_IN_FLIGHT: u32 = 1 << 16;
pub const MAX_SECONDS: f64 = 7.0 * 86_400.0;
pub const MAX_SHARES: u32 = 1 << 10;

/// A value outside its limit: the field (as the config file names it) and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LimitError {
    pub field: String,
    pub message: String,
}

fn over(field: &str, value: impl std::fmt::Display, limit: impl std::fmt::Display) -> LimitError {
    LimitError {
        field: field.to_owned(),
        message: format!("{value} is over the limit of {limit}"),
    }
}

impl WorkloadSpec {
    /// Checks the spec against the limits above; every problem, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<LimitError>> {
        let mut errors = Vec::new();
        if self.num_requests == 0 {
            errors.push(LimitError {
                field: "num_requests".into(),
                message: "must be at least 1".into(),
            });
        }
        if self.num_requests > MAX_REQUESTS {
            errors.push(over("num_requests", self.num_requests, MAX_REQUESTS));
        }
        if self.output_tokens > MAX_OUTPUT_TOKENS {
            errors.push(over("output_tokens", self.output_tokens, MAX_OUTPUT_TOKENS));
        }
        let p = &self.params;
        let sections = [
            ("document_tokens", p.document_tokens),
            ("question_tokens", p.question_tokens),
            ("system_tokens", p.system_tokens),
            ("user_tokens", p.user_tokens),
            ("context_tokens", p.context_tokens),
            ("instruction_tokens", p.instruction_tokens),
            ("prompt_tokens", p.prompt_tokens),
        ];
        for (name, v) in sections {
            if let Some(v) = v.filter(|v| *v > MAX_SECTION_TOKENS) {
                errors.push(over(&format!("workload.{name}"), v, MAX_SECTION_TOKENS));
            }
        }
        for (name, v) in [
            ("documents", p.documents),
            ("conversations", p.conversations),
            ("turns", p.turns),
        ] {
            if let Some(v) = v.filter(|v| *v > MAX_REQUESTS) {
                errors.push(over(&format!("workload.{name}"), v, MAX_REQUESTS));
            }
        }
        if let Some(t) = p
            .think_time_ms
            .filter(|t| f64::from(*t) / 1000.0 > MAX_SECONDS)
        {
            errors.push(over("workload.think_time_ms", t, MAX_SECONDS * 1000.0));
        }
        if errors.is_empty() {
            let tokens = self.pool_tokens();
            if tokens > MAX_POOL_TOKENS {
                errors.push(LimitError {
                    field: "workload".into(),
                    message: format!(
                        "one request set would hold {tokens} prompt tokens, over the limit of {MAX_POOL_TOKENS}: fewer requests or shorter prompts"
                    ),
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Prompt tokens the generator holds for one request set (the shared sections are
    /// repeated in every request that carries them).
    pub fn pool_tokens(&self) -> u64 {
        let p = &self.params;
        let n = u64::from(self.num_requests);
        let v = |x: Option<u32>, default: u32| u64::from(x.unwrap_or(default));
        match self.kind {
            WorkloadKind::LongContextHighReuse => {
                n * (v(p.document_tokens, 4000) + v(p.question_tokens, 24) + v(p.system_tokens, 32))
            }
            WorkloadKind::MultiTurnConversation => {
                let turns = v(p.turns, 5).max(1);
                let convs = p.conversations.map_or(n.div_ceil(turns), u64::from).max(1);
                convs * v(p.system_tokens, 400) + n * v(p.user_tokens, 80)
            }
            WorkloadKind::CodeGeneration => {
                n * (v(p.context_tokens, 2000) + v(p.instruction_tokens, 32))
            }
            WorkloadKind::BatchProcessing => {
                n * (v(p.instruction_tokens, 200) + v(p.document_tokens, 600))
            }
            WorkloadKind::ColdStart => n * v(p.prompt_tokens, 1000),
        }
    }
}

impl LoadSpec {
    /// Checks the load against the limits above; every problem, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<LimitError>> {
        let mut errors = Vec::new();
        let seconds = |field: &str, v: f64, errors: &mut Vec<LimitError>| {
            if !(v.is_finite() && v > 0.0) {
                errors.push(LimitError {
                    field: field.to_owned(),
                    message: format!("must be a number of seconds > 0, got {v}"),
                });
            } else if v > MAX_SECONDS {
                errors.push(over(field, v, MAX_SECONDS));
            }
        };
        seconds("ttft_timeout_s", self.ttft_timeout_s, &mut errors);
        seconds("idle_timeout_s", self.idle_timeout_s, &mut errors);
        if let Some(d) = self.duration_s {
            seconds("duration_s", d, &mut errors);
        }
        if self.warmup_requests > MAX_REQUESTS {
            errors.push(over("warmup_requests", self.warmup_requests, MAX_REQUESTS));
        }
        match self.arrivals {
            Arrivals::Closed { concurrency } => {
                if self.duration_s.is_some() && concurrency > MAX_IN_FLIGHT {
                    errors.push(LimitError {
                        field: "concurrency".into(),
                        message: format!(
                            "{concurrency} is over the limit of {MAX_IN_FLIGHT} requests in flight for a round limited by duration_s"
                        ),
                    });
                }
            }
            Arrivals::Open {
                rate,
                burstiness,
                max_concurrency,
            } => {
                if let Some(m) = max_concurrency.filter(|m| *m > MAX_IN_FLIGHT) {
                    errors.push(over("max_concurrency", m, MAX_IN_FLIGHT));
                }
                if !(burstiness.is_finite() && burstiness > 0.0) {
                    errors.push(LimitError {
                        field: "burstiness".into(),
                        message: format!("must be > 0, got {burstiness}"),
                    });
                }
                let rates = match rate {
                    Rate::Fixed(r) => vec![("request_rate", r)],
                    Rate::Ramp { start, end, .. } => {
                        vec![("ramp_up.start_rate", start), ("ramp_up.end_rate", end)]
                    }
                };
                for (field, r) in rates {
                    // Infinity is allowed: everything at once.
                    if r.is_nan() || r <= 0.0 {
                        errors.push(LimitError {
                            field: field.into(),
                            message: format!("must be > 0 requests per second, got {r}"),
                        });
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Checks a Mooncake trace's entries: the agent generates a prompt of each entry's
/// `input_length`.
pub fn check_trace(entries: &[crate::dataset::TraceEntry]) -> Result<(), Vec<LimitError>> {
    let mut errors = Vec::new();
    if entries.len() > MAX_REQUESTS as usize {
        errors.push(over("trace", entries.len(), MAX_REQUESTS));
    }
    if let Some((i, e)) = entries
        .iter()
        .enumerate()
        .find(|(_, e)| e.input_length > MAX_SECTION_TOKENS || e.output_length > MAX_OUTPUT_TOKENS)
    {
        errors.push(LimitError {
            field: format!("trace[{i}]"),
            message: format!(
                "input_length {} / output_length {} is over the limit of {MAX_SECTION_TOKENS} / {MAX_OUTPUT_TOKENS}",
                e.input_length, e.output_length
            ),
        });
    }
    let total: u64 = entries.iter().map(|e| u64::from(e.input_length)).sum();
    if total > MAX_POOL_TOKENS {
        errors.push(over(
            "trace",
            format!("{total} prompt tokens"),
            MAX_POOL_TOKENS,
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{OutputDist, WorkloadParams};

    fn spec(kind: WorkloadKind, params: WorkloadParams) -> WorkloadSpec {
        WorkloadSpec {
            kind,
            seed: 1,
            num_requests: 10,
            output_tokens: 8,
            output: OutputDist::Fixed,
            params,
        }
    }

    fn load(arrivals: Arrivals, duration_s: Option<f64>) -> LoadSpec {
        LoadSpec {
            arrivals,
            duration_s,
            warmup_requests: 0,
            ttft_timeout_s: 30.0,
            idle_timeout_s: 30.0,
        }
    }

    #[test]
    fn every_default_workload_is_within_the_limits() {
        for kind in WorkloadKind::ALL {
            assert_eq!(
                spec(kind, WorkloadParams::default()).validate(),
                Ok(()),
                "{kind}"
            );
        }
    }

    #[test]
    fn a_huge_section_names_its_field_and_the_limit() {
        let s = spec(
            WorkloadKind::LongContextHighReuse,
            WorkloadParams {
                document_tokens: Some(2_000_000_000),
                ..Default::default()
            },
        );
        let e = s.validate().expect_err("over the limit");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "workload.document_tokens");
        assert!(e[0].message.contains("2097152"), "{}", e[0]);
    }

    #[test]
    fn sections_within_limits_can_still_make_a_request_set_too_big() {
        let mut s = spec(
            WorkloadKind::LongContextHighReuse,
            WorkloadParams {
                document_tokens: Some(MAX_SECTION_TOKENS),
                ..Default::default()
            },
        );
        s.num_requests = 1000;
        let e = s.validate().expect_err("2 billion tokens");
        assert_eq!(e[0].field, "workload");
        assert!(e[0].message.contains("prompt tokens"), "{}", e[0]);
    }

    #[test]
    fn concurrency_is_free_when_the_round_is_counted_and_bounded_when_it_is_timed() {
        let huge = Arrivals::Closed {
            concurrency: 100_000_000,
        };
        assert_eq!(load(huge, None).validate(), Ok(()));
        let e = load(huge, Some(10.0)).validate().expect_err("timed");
        assert_eq!(e[0].field, "concurrency");
    }

    #[test]
    fn times_must_be_positive_and_finite() {
        let mut l = load(Arrivals::Closed { concurrency: 1 }, Some(f64::INFINITY));
        l.ttft_timeout_s = -1.0;
        l.idle_timeout_s = 1e300;
        let fields: Vec<String> = l
            .validate()
            .expect_err("bad times")
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["ttft_timeout_s", "idle_timeout_s", "duration_s"]);
    }

    #[test]
    fn an_infinite_rate_is_everything_at_once_but_nan_is_refused() {
        let open = |r: f64| Arrivals::Open {
            rate: Rate::Fixed(r),
            burstiness: 1.0,
            max_concurrency: None,
        };
        assert_eq!(load(open(f64::INFINITY), None).validate(), Ok(()));
        assert!(load(open(f64::NAN), None).validate().is_err());
    }
}
