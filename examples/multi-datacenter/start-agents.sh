#!/usr/bin/env bash
# Three "datacenters" on this machine: three kvbench-sim engines with different speeds, each
# with its kvbench-agent, on loopback, labelled as three clouds. Then
#
#   kvbench run examples/multi-datacenter/multi_scenario_config.yaml
#
# compares them with one line per scenario in the plan (placement: each). `--stop` ends them.
# Binaries come from target/release (built here when missing) or $KVBENCH_BIN.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${KVBENCH_BIN:-$ROOT/target/release}"
RUN="${KVBENCH_RUN_DIR:-${TMPDIR:-/tmp}/kvbench-multi-datacenter}"

stop() {
  if [ -f "$RUN/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$RUN/pids"
    rm -f "$RUN/pids"
    echo "stopped the three datacenters"
  fi
}

if [ "${1:-}" = "--stop" ]; then
  stop
  exit 0
fi

if [ ! -x "$BIN/kvbench-sim" ] || [ ! -x "$BIN/kvbench-agent" ]; then
  echo "building kvbench-sim and kvbench-agent (release) ..."
  cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin kvbench-sim --bin kvbench-agent
fi
mkdir -p "$RUN"
stop >/dev/null

# name, cloud, sim port, agent port, then the sim's speed: a fast, a middling, a slow cloud.
start() {
  local name=$1 cloud=$2 sim_port=$3 agent_port=$4
  shift 4
  "$BIN/kvbench-sim" --listen "127.0.0.1:$sim_port" "$@" >"$RUN/$name-sim.log" 2>&1 &
  echo $! >>"$RUN/pids"
  "$BIN/kvbench-agent" --listen "127.0.0.1:$agent_port" --engine "http://127.0.0.1:$sim_port" \
    --name "$name" --label "cloud=$cloud" --label "tier=gpu" --label "model=kvbench-sim" \
    >"$RUN/$name-agent.log" 2>&1 &
  echo $! >>"$RUN/pids"
}

start dc-alpha alpha 18101 18201 --prefill-per-token-us 60 --decode-base-ms 8
start dc-beta beta 18102 18202 --prefill-per-token-us 95 --decode-base-ms 10
start dc-gamma gamma 18103 18203 --prefill-per-token-us 150 --decode-base-ms 14

for port in 18201 18202 18203; do
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
  done
done
echo "three datacenters up (agents on 127.0.0.1:18201-18203; logs in $RUN)"
echo "run:  kvbench run $HERE/multi_scenario_config.yaml   (or: kvbench agents ...)"
echo "stop: $0 --stop"
