"""Probe notebook 03's training-set size at the same number of steps (it wrote to a scratch folder):
python probe.py NAME METHOD DATASET NUM_TRAIN EPOCHS [SEEDS]"""
import json, sys, time
from dataclasses import replace
from plus.evaluation import benchmark_config, run_benchmark
name, method, dataset, num_train, epochs = sys.argv[1:6]
seeds = tuple(int(s) for s in (sys.argv[6] if len(sys.argv) > 6 else "0,1,2").split(","))
base = benchmark_config("cpu", methods=(method,), datasets=(dataset,), seeds=seeds, num_train=int(num_train))
config = replace(base, train=replace(base.train, num_epochs=int(epochs)), skip=())
t = time.perf_counter()
res = run_benchmark(config, f"/work/scratch/p03/{name}")
runs = res["runs"][dataset][method]
out = {"name": name, "seconds": round(time.perf_counter() - t), "per_seed": []}
for m in runs:
    out["per_seed"].append({s: {k: round(m[s][k], 3) for k in ("accuracy", "contested_accuracy") if k in m[s]} for s in config.splits if s in m} | {"sec": round(m["train"]["run_seconds"])})
print(json.dumps(out))
with open("/work/scratch/p03/log.jsonl", "a") as f: f.write(json.dumps(out) + "\n")
