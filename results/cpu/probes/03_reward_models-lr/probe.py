"""Probe notebook 03 settings: python probe.py NAME METHOD DATASET LAYERS EPOCHS LR [SEEDS]"""
import json, sys, time
from dataclasses import replace
from plus.evaluation import benchmark_config, run_benchmark
name, method, dataset, layers, epochs, lr = sys.argv[1:7]
seeds = tuple(int(s) for s in (sys.argv[7] if len(sys.argv) > 7 else "0,1,2").split(","))
extra = dict(a.split("=") for a in sys.argv[8:])
base = benchmark_config("cpu", methods=(method,), datasets=(dataset,), seeds=seeds)
config = replace(base, reward_model=replace(base.reward_model, num_trainable_layers=int(layers), **{k[3:]: v for k, v in extra.items() if k.startswith("rm.")}),
                 train=replace(base.train, num_epochs=int(epochs), learning_rate=float(lr), head_learning_rate=float(lr)), skip=())
t = time.perf_counter()
res = run_benchmark(config, f"/work/scratch/p03/{name}")
runs = res["runs"][dataset][method]
out = {"name": name, "seconds": round(time.perf_counter() - t), "per_seed": []}
for m in runs:
    out["per_seed"].append({s: {k: round(m[s][k], 3) for k in ("accuracy", "contested_accuracy") if k in m[s]} for s in config.splits if s in m} | {"sec": round(m["train"]["run_seconds"])})
print(json.dumps(out))
with open("/work/scratch/p03/log.jsonl", "a") as f: f.write(json.dumps(out) + "\n")
