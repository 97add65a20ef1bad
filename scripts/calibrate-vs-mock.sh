#!/usr/bin/env bash
# kvbench calibrate against kvbench-sim and against an independent stamping mock
# (scripts/stamping_mock.c: compiled, one thread, the kernel's receive time as a request's
# arrival), interleaved so that both see the same machine: PAIRS times, the mock then the
# sim, each at every concurrency once. Engine on core 1, harness on core 0 (--pin).
#
#   scripts/calibrate-vs-mock.sh [PAIRS] [CONCURRENCIES]     (default: 3 1,64,256)
#
# Prints each run's TTFT overhead per concurrency, tagged `mock#i` or `sim#i`.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-3}
conc=${2:-1,64,256}
port=18502
common=(--concurrency "$conc" --itl-ms 20 --output-tokens 32 --pin)
[ -x target/release/kvbench ] || cargo build --release --bin kvbench
mkdir -p target
gcc -O2 -Wall -o target/stamping_mock scripts/stamping_mock.c
mock_pid=
stop_mock() {
  if [ -n "$mock_pid" ]; then
    kill "$mock_pid" 2>/dev/null || true
    wait "$mock_pid" 2>/dev/null || true
    mock_pid=
  fi
}
trap stop_mock EXIT
# Per run and concurrency: the tag, the concurrency and the TTFT overhead p50 / p99 (ms).
rows() { awk -F'|' -v tag="$1" 'NF > 15 && $2 ~ /[0-9]/ { printf "%s c=%s overhead p50/p99 ms:%s\n", tag, $2 + 0, $6 }'; }
for i in $(seq "$pairs"); do
  taskset -c 1 target/stamping_mock --port "$port" --ttft-ms 50 --itl-ms 20 >/dev/null &
  mock_pid=$!
  sleep 0.3
  ./target/release/kvbench calibrate --engine "http://127.0.0.1:$port" "${common[@]}" | rows "mock#$i"
  stop_mock
  ./target/release/kvbench calibrate "${common[@]}" | rows "sim#$i"
done
