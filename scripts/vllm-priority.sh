#!/usr/bin/env bash
# The agent's priority against vLLM's CPU worker on the same cores: the seed's multi-turn
# plan (4 conversations x 5 turns, concurrency 4, 2 rounds, a clear before each run) on vLLM's
# CPU build, RUNS times with the agent at its default priority and RUNS times at
# `scheduling: {nice: -10}`, alternating. Prints per run the agent's event-loop lag p99 in
# each round, both rounds' mean TTFT and whether round 2 beat round 1, then a summary.
# Needs scripts/build-vllm-cpu.sh's build and root (a negative nice).
# Usage: scripts/vllm-priority.sh [RUNS] [KVBENCH_BINARY]   (default 6, target/release/kvbench)
set -euo pipefail
RUNS="${1:-6}"
BIN="${2:-target/release/kvbench}"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
D="$(bash "$(dirname "$0")/build-vllm-cpu.sh" | tail -1)"
WORK="$(mktemp -d)"
PORT=18123
setsid "$D/serve.sh" "$PORT" --enable-prompt-tokens-details >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM -- -$SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do sleep 1; done
cd "$WORK"
printf 'endpoint: http://127.0.0.1:%s\nmodel: tiny\napi: chat\nnum_requests: 20\noutput_tokens: 64\nseed: 42\nworkload:\n  turns: 5\n  system_tokens: 400\n  user_tokens: 80\n' "$PORT" > chat.yaml
for mode in default nice; do
  printf 'name: vllm\nengine:\n  kind: vllm\n  base_url: http://127.0.0.1:%s\n' "$PORT" > "agent-$mode.yaml"
  [ "$mode" = nice ] && printf 'scheduling:\n  nice: -10\n' >> "agent-$mode.yaml"
  printf 'output_dir: out-%s\nisolation: clear\nisolate_before_first: true\nwait_between_scenarios: 0\nagent_config: agent-%s.yaml\ntest_scenarios:\n  - {name: chat, config_file: chat.yaml, scenario: multi_turn_conversation, rounds: 2, concurrency: 4}\n' "$mode" "$mode" > "plan-$mode.yaml"
done
echo "mode | run | lag p99 r1 (ms) | lag p99 r2 (ms) | TTFT r1 (ms) | TTFT r2 (ms) | round 2 faster"
for i in $(seq 1 "$RUNS"); do
  for mode in default nice; do
    rm -rf "out-$mode"
    "$BIN" run "plan-$mode.yaml" >/dev/null 2>&1
    python3 - "$mode" "$i" <<'PY'
import glob, json, sys
mode, i = sys.argv[1], sys.argv[2]
s = json.load(open(sorted(glob.glob(f"out-{mode}/chat_stats_*.json"))[-1]))
r = s["rounds"]
lag = [x.get("agent_health", {}).get("event_loop_lag_p99_ms") for x in r]
nice = r[0].get("agent_health", {}).get("nice")
t = [x["mean_ttft_ms"] for x in r]
print(f"{mode} (nice {nice}) | {i} | {lag[0]:.1f} | {lag[1]:.1f} | {t[0]:.1f} | {t[1]:.1f} | {'yes' if t[1] < t[0] else 'no'}")
PY
  done
done
