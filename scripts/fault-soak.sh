#!/usr/bin/env bash
# A fault soak (a benchmark, not a CI test): three agents, each with a kvbench-sim beside it
# in a network namespace of its own, reached over veth pairs; a plan of many short
# scenarios (on each agent, and split across all three); and, at random intervals, real
# faults: links cut (short and long), connections reset (ss -K), agents frozen (SIGSTOP),
# agents killed (SIGKILL) or terminated (SIGTERM), then started again, and the coordinator killed (SIGKILL, then
# `kvbench run --resume`). At the end: the faults injected, the scenarios completed, failed,
# partial and kept across resumptions, and the requests the sims served against the
# records in the results folder.
#
#   sudo bash scripts/fault-soak.sh [SECONDS] [SEED]     (default 600 s; needs root, iproute2)
#
# Records come from the results files, the spools of interrupted attempts and the late
# records fetched from agents lost during a round (*_records_*.jsonl).
#
# Needs `cargo build --release` first (target/release/kvbench and kvbench-sim). Writes its
# folder to $SOAK_DIR (default /tmp/kvbench-soak) and prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_LEFT=${1:-600}
SEED=${2:-1}
RANDOM=$SEED
BIN=$PWD/target/release
DIR=${SOAK_DIR:-/tmp/kvbench-soak}
[ "$(id -u)" = 0 ] || { echo "fault-soak: needs root (ip netns, veth)" >&2; exit 2; }
if [ ! -x "$BIN/kvbench" ] || [ ! -x "$BIN/kvbench-sim" ]; then
  echo "fault-soak: cargo build --release first" >&2; exit 2
fi
rm -rf "$DIR"; mkdir -p "$DIR"
cd "$DIR"

declare -A AGENT_PID SIM_PID ADDR
FAULTS=()
log() { echo "[$(date +%T)] $*" | tee -a soak.log >&2; }

host_up() { # k name
  local k=$1 name=$2 ns=kvsoak$1 h=kvsoakh$1 n=kvsoakn$1
  ip netns add "$ns"
  ip link add "$h" type veth peer name "$n"
  ip link set "$n" netns "$ns"
  ip addr add "10.250.$k.1/30" dev "$h"; ip link set "$h" up
  ip netns exec "$ns" ip addr add "10.250.$k.2/30" dev "$n"
  ip netns exec "$ns" ip link set "$n" up
  ip netns exec "$ns" ip link set lo up
  ADDR[$name]=10.250.$k.2
  ip netns exec "$ns" "$BIN/kvbench-sim" --listen 0.0.0.0:8000 2>>"sim-$name.log" &
  SIM_PID[$name]=$!
  agent_up "$k" "$name"
}

agent_up() { # k name
  local ns=kvsoak$1
  ip netns exec "$ns" "$BIN/kvbench" internal-agent --listen "10.250.$1.2:50051" --insecure \
    --no-telemetry --name "$2" --engine http://127.0.0.1:8000 >>"agent-$2.log" 2>&1 &
  AGENT_PID[$2]=$!
}

cleanup() {
  set +e
  for name in "${!AGENT_PID[@]}"; do kill -CONT "${AGENT_PID[$name]}" 2>/dev/null; kill -9 "${AGENT_PID[$name]}" 2>/dev/null; done
  for name in "${!SIM_PID[@]}"; do kill -9 "${SIM_PID[$name]}" 2>/dev/null; done
  [ -n "${RUN_PID:-}" ] && kill -9 "$RUN_PID" 2>/dev/null
  for k in 0 1 2; do ip link del "kvsoakh$k" 2>/dev/null; ip netns del "kvsoak$k" 2>/dev/null; done
}
trap cleanup EXIT

NAMES=(a b c)
for k in 0 1 2; do host_up "$k" "${NAMES[$k]}"; done
sleep 1

# Many short scenarios: on each agent, and split across the three.
cat > short.yaml <<'EOF'
endpoint: agent
num_requests: 60
output_tokens: 8
workload: {prompt_tokens: 64}
EOF
cat > medium.yaml <<'EOF'
endpoint: agent
num_requests: 100000
duration_s: 8
output_tokens: 8
workload: {prompt_tokens: 64}
EOF
{
  echo "output_dir: out"
  echo "isolation: none"
  echo "wait_between_scenarios: 0"
  echo "agents:"
  for n in a b c; do echo "  - {name: $n, address: \"http://${ADDR[$n]}:50051\"}"; done
  echo "test_scenarios:"
  for i in $(seq 1 60); do
    case $((i % 4)) in
      0) echo "  - {name: s$i, scenario: cold_start, config_file: medium.yaml, agents: [a, b, c], placement: split, rounds: 1, concurrency: 6}" ;;
      *) n=${NAMES[$((i % 3))]}
         cfg=short.yaml; [ $((i % 2)) = 0 ] && cfg=medium.yaml
         echo "  - {name: s$i, scenario: cold_start, config_file: $cfg, agent: $n, rounds: 1, concurrency: 4}" ;;
    esac
  done
} > plan.yaml

START=$(date +%s)
deadline() { [ $(( $(date +%s) - START )) -ge "$SECONDS_LEFT" ]; }
RESUMES=0
start_run() {
  if [ "$RESUMES" = 0 ] && [ ! -d out ]; then
    "$BIN/kvbench" run plan.yaml --json >>run.jsonl 2>>run.log &
  else
    "$BIN/kvbench" run --resume out --json >>run.jsonl 2>>run.log &
  fi
  RUN_PID=$!
}

agent_index() { case $1 in a) echo 0;; b) echo 1;; c) echo 2;; esac; }

inject() {
  local name=${NAMES[$((RANDOM % 3))]} k d
  k=$(agent_index "$name")
  case $((RANDOM % 7)) in
    0) d=$((2 + RANDOM % 6)); log "cut the link to $name for ${d}s"; FAULTS+=("link cut <9 s")
       ip link set "kvsoakh$k" down; sleep "$d"; ip link set "kvsoakh$k" up ;;
    1) d=$((12 + RANDOM % 6)); log "cut the link to $name for ${d}s (past the loss limit)"; FAULTS+=("link cut >9 s")
       ip link set "kvsoakh$k" down; sleep "$d"; ip link set "kvsoakh$k" up ;;
    2) log "reset the connections to $name"; FAULTS+=("connection reset")
       ss -K dst "${ADDR[$name]}" dport = 50051 >/dev/null 2>&1 || true ;;
    3) d=$((3 + RANDOM % 10)); log "freeze $name for ${d}s"; FAULTS+=("agent frozen")
       kill -STOP "${AGENT_PID[$name]}"; sleep "$d"; kill -CONT "${AGENT_PID[$name]}" ;;
    4) log "kill -9 $name, start it again"; FAULTS+=("agent killed")
       kill -9 "${AGENT_PID[$name]}"; wait "${AGENT_PID[$name]}" 2>/dev/null || true
       sleep 2; agent_up "$k" "$name" ;;
    6) log "SIGTERM $name, start it again"; FAULTS+=("agent terminated")
       kill -TERM "${AGENT_PID[$name]}"; wait "${AGENT_PID[$name]}" 2>/dev/null || true
       sleep 1; agent_up "$k" "$name" ;;
    5) log "kill -9 the coordinator, then --resume"; FAULTS+=("coordinator killed")
       kill -9 "$RUN_PID"; wait "$RUN_PID" 2>/dev/null || true
       RESUMES=$((RESUMES + 1)); sleep 1; start_run ;;
  esac
}

start_run
while ! deadline; do
  sleep $((4 + RANDOM % 10))
  if ! kill -0 "$RUN_PID" 2>/dev/null; then
    wait "$RUN_PID" 2>/dev/null && rc=0 || rc=$?
    log "the run ended (exit $rc)"
    break
  fi
  inject
done
if kill -0 "$RUN_PID" 2>/dev/null; then
  log "time is up: SIGINT to the coordinator"
  kill -INT "$RUN_PID"; wait "$RUN_PID" 2>/dev/null || true
fi

served=0
for n in a b c; do
  s=$(curl -s "http://${ADDR[$n]}:8000/metrics" | awk '/^vllm:request_success_total/ {print int($2)}')
  served=$((served + ${s:-0}))
done
python3 - "$served" "$RESUMES" "${FAULTS[@]}" <<'EOF'
import collections, glob, json, sys
served, resumes, faults = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
ok = cancelled = other = 0
def count(r):
    global ok, cancelled, other
    o = r.get("outcome")
    if o == "ok": ok += 1
    elif o == "cancelled": cancelled += 1
    else: other += 1
for f in glob.glob("out/*_results_*.json"):
    for r in json.load(open(f))["records"]: count(r)
torn = 0
for f in glob.glob("out/*_records_*.jsonl"):
    for line in open(f):
        try:
            if line.strip(): count(json.loads(line))
        except ValueError:
            torn += 1  # the last line of a spool whose coordinator was killed mid-write
run = json.load(open(sorted(glob.glob("out/multi_scenario_run_*.json"))[-1]))
status = collections.Counter(s.get("status") or "not run" for s in run["scenarios"])
print("| what | count |\n|---|---|")
for k, v in sorted(collections.Counter(faults).items()):
    print(f"| fault: {k} | {v} |")
for k, v in sorted(status.items()):
    print(f"| scenarios {k} | {v} |")
print(f"| resumptions (`--resume`) | {len(run.get('resumed', []))} |")
print(f"| requests the sims served | {served} |")
print(f"| records ok | {ok} |")
print(f"| records cancelled (stopped in flight) | {cancelled} |")
print(f"| records failed otherwise | {other} |")
print(f"| records cut short by a kill (spool's last line) | {torn} |")
print(f"| served minus ok records | {served - ok} |")
EOF
