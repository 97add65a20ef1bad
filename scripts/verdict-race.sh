#!/usr/bin/env bash
# How often the cold-start verdict is wrong on the embedded kvbench-sim, at concurrency 2, 4
# and 8, over TRIES tries each (a different workload seed per try):
#   warm: two scenarios on the same documents with no clear between them; the second's
#         round 1 is warm (as warm as a round 2) and must be judged `failed`;
#   cold: the same two scenarios with `isolation: clear` (and a clear before the first);
#         every round 1 is cold and must be judged `verified`.
# Prints one line per concurrency: wrong verdicts of each kind.
# Usage: scripts/verdict-race.sh [KVBENCH_BINARY] [TRIES]   (default: target/release/kvbench, 20)
set -euo pipefail
BIN="${1:-target/release/kvbench}"
TRIES="${2:-20}"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

verdict() { # the verdict of the newest stats file of scenario $1 in out/
  python3 -c 'import json,sys,glob; f=sorted(glob.glob("out/"+sys.argv[1]+"_stats_*.json"))[-1]; print(json.load(open(f))["isolation"]["verdict"])' "$1"
}

echo "concurrency | tries | warm round 1 not failed | cold round 1 not verified"
for c in 2 4 8; do
  missed=0 false_fail=0
  for i in $(seq 1 "$TRIES"); do
    printf 'endpoint: sim\nmodel: kvbench-sim\napi: chat\nnum_requests: 16\noutput_tokens: 8\nseed: %s\nworkload:\n  documents: 4\n  document_tokens: 1500\n' "$i" > long.yaml
    for policy in none clear; do
      rm -rf out
      printf 'output_dir: out\nisolation: %s\nisolate_before_first: %s\nwait_between_scenarios: 0\ntest_scenarios:\n  - {name: first, config_file: long.yaml, scenario: long_context_high_reuse, rounds: 1, concurrency: %s}\n  - {name: second, config_file: long.yaml, scenario: long_context_high_reuse, rounds: 1, concurrency: %s}\n' \
        "$policy" "$([ "$policy" = clear ] && echo true || echo false)" "$c" "$c" > plan.yaml
      "$BIN" run plan.yaml >/dev/null 2>&1 || true
      v="$(verdict second)"
      if [ "$policy" = none ] && [ "$v" != failed ]; then missed=$((missed + 1)); fi
      if [ "$policy" = clear ] && [ "$v" != verified ]; then false_fail=$((false_fail + 1)); fi
      if [ "$policy" = clear ] && [ "$(verdict first)" != verified ]; then false_fail=$((false_fail + 1)); fi
    done
  done
  echo "$c | $TRIES | $missed | $false_fail (of $((2 * TRIES)) round 1s)"
done
