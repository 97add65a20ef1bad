#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input, each for a time budget (default 600 s): an engine's
# SSE stream, the Prometheus text an engine serves, plan and scenario config files, and the
# agent protocol's messages converted to domain types. The targets are the suite's own
# fuzz tests (kvbench_common::fuzz: mutations of valid seeds), run one at a time with
# KVBENCH_FUZZ_SECS; each prints how many inputs it tried. Exit 1 on the first panic
# (the input is printed).
#
#   bash scripts/fuzz.sh [SECONDS_EACH] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export KVBENCH_FUZZ_SECS=${1:-600}
export KVBENCH_FUZZ_SEED=${2:-7}
for target in the_sse_parser_never_panics the_prometheus_text_parser_never_panics \
  the_plan_loader_never_panics the_wire_conversions_never_panic; do
  echo "== $target (${KVBENCH_FUZZ_SECS} s, seed $KVBENCH_FUZZ_SEED)"
  cargo nextest run --release --workspace --no-capture -E "test($target)" 2>&1 \
    | grep -E "^fuzz |panicked|PASS|FAIL"
done
