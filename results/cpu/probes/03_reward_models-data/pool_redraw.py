"""The pooled rows of README.md's later-probes table (ICL at 512 x 8 with its context redraw, BTL at 256 x 2): mean
[95% bootstrap over seeds and pairs] of the probe runs, read from their per-run result.json files."""
import json, glob
from plus.evaluation import aggregate_over_seeds
S = "/work/scratch/p03/"  # the scratch folder the probes wrote to
def runs(name, d, m): return json.load(open(f"{S}{name}/results.json"))["runs"][d][m]
def seed_runs(name, d, m):  # per-run result.json (a probe stopped mid-way has no results.json)
    return [json.load(open(p))["metrics"] for p in sorted(glob.glob(f"{S}{name}/runs/{d}/{m}/seed*/result.json"))]
sets = {
    "icl pets 512x8 redraw": seed_runs("icl-pets-512x8-redraw", "pets-ood", "icl") + seed_runs("icl-pets-512x8-redraw-s12", "pets-ood", "icl"),
    "btl uf 256x2": runs("btl-uf-256x2", "uf-p-4-synthetic", "btl"),
}
for k, v in sets.items():
    a = aggregate_over_seeds([{s: x[s] for s in ("test",)} for x in v])["test"]
    f = lambda m: f"{100*a[m]['mean']:.1f} [{100*a[m]['ci_low']:.1f}, {100*a[m]['ci_high']:.1f}]"
    print(k, len(v), "seeds | all", f("accuracy"), "| contested", f("contested_accuracy"), "| per-seed all", [round(100*x["test"]["accuracy"],1) for x in v], "| per-seed contested", [round(100*x["test"]["contested_accuracy"],1) for x in v], "| sec", [round(x["train"]["run_seconds"]) for x in v])
