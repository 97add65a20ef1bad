#!/usr/bin/env python3
"""A synthetic run folder for measuring `kvbench report`: N scenarios x 2 rounds x R requests.

Copies the stats files of a saved run (default: coordinator/tests/data/report_run) under N
names, with their figures scaled per scenario and their rounds placed one after another,
writes each scenario's results file with R records per round (2 rounds) and its telemetry
file (two GPUs sampled at 10 Hz, the engine's metrics at 1 Hz, over each round), and a run
file naming them all.

    python3 scripts/synthetic-run.py OUT_DIR [--scenarios 20] [--requests 10000]
    /usr/bin/time -v ./target/release/kvbench report OUT_DIR
"""
import argparse
import copy
import glob
import json
import os

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("out")
p.add_argument("--scenarios", type=int, default=20)
p.add_argument("--requests", type=int, default=10000)
p.add_argument("--source", default="coordinator/tests/data/report_run")
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
run = json.load(open(glob.glob(os.path.join(a.source, "multi_scenario_run_*.json"))[0]))
template = json.load(open(os.path.join(a.source, run["scenarios"][0]["stats_file"])))
ts = run["timestamp"]
scenarios = []
for i in range(a.scenarios):
    name = f"cloud-{i % 4}-node-{i // 4}-model-{i % 3}"
    st = copy.deepcopy(template)
    st["scenario"]["name"] = name
    for k, r in enumerate(st["rounds"]):
        # Scenario i's rounds at 30 s intervals, 15 s apart, in microseconds.
        r["started_at_us"] = 1_764_000_000_000_000 + (i * 30 + k * 15) * 1_000_000
        r["duration"] = a.requests / 1000 + 0.7
        for k, v in list(r.items()):
            if k.startswith(("mean_", "median_", "p")) and k.endswith("_ms") and isinstance(v, (int, float)):
                r[k] = v * (1 + i / 10)
        r["completed"] = a.requests
    stats_file = f"{name}_stats_{ts}.json"
    json.dump(st, open(os.path.join(a.out, stats_file), "w"))
    results_file = f"{name}_results_{ts}.json"
    with open(os.path.join(a.out, results_file), "w") as f:
        f.write('{"kvbench_version": "synthetic", "records": [\n')
        for rnd in (1, 2):
            for j in range(a.requests):
                rec = {"scenario": name, "round": rnd, "agent": "a", "request_id": j,
                       "sent_ms": j * 1.0, "first_token_ms": j + 40.0, "end_ms": j + 700.0,
                       "chunk_offsets_ms": [40.0 + 10 * k for k in range(64)],
                       "output_tokens": 64, "cached_tokens": 900, "outcome": "ok"}
                last = rnd == 2 and j == a.requests - 1
                f.write(json.dumps(rec) + ("\n" if last else ",\n"))
        f.write("]}\n")
    telemetry_file = f"{name}_telemetry_{ts}.jsonl"
    with open(os.path.join(a.out, telemetry_file), "w") as f:
        for rnd in (1, 2):
            span_ms = a.requests + 700
            for t in range(0, span_ms, 100):
                values = {}
                for g in (0, 1):
                    values[f"gpu{g}.util_pct"] = 40 + 50 * ((t // 100 + g) % 7) / 7
                    values[f"gpu{g}.mem_used_bytes"] = (60 + g * 5) * 2**30
                f.write(json.dumps({"round": rnd, "agent": "a", "t_ms": float(t),
                                    "source": "nvml", "values": values}) + "\n")
                if t % 1000 == 0:
                    f.write(json.dumps({"round": rnd, "agent": "a", "t_ms": float(t),
                                        "source": "engine_metrics",
                                        "values": {"vllm:kv_cache_usage_perc": t / span_ms}}) + "\n")
    scenarios.append({"name": name, "status": "completed", "stats_file": stats_file,
                      "results_file": results_file, "telemetry_file": telemetry_file,
                      "targets": run["targets"]})
run["scenarios"] = scenarios
json.dump(run, open(os.path.join(a.out, f"multi_scenario_run_{ts}.json"), "w"), indent=1)
print(f"{a.scenarios} scenarios x 2 rounds x {a.requests} requests in {a.out}")
