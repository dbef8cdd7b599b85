"""The pooled 3- and 6-seed rows of README.md: mean [95% bootstrap over seeds and pairs] of the probe runs
(scratch folder) and of the committed benchmark runs (results/cpu/03_reward_models/results.json)."""
import json
from plus.evaluation import aggregate_over_seeds
S="/work/scratch/p03/"
def runs(name, d, m): return json.load(open(f"{S}{name}/results.json"))["runs"][d][m]
main=json.load(open("results/cpu/03_reward_models/results.json"))["runs"]
sets = {
 "icl pets 256x8 (cpu config) s0-2": main["pets-ood"]["icl"],
 "icl pets 512x4 s0-2": runs("icl-pets-512x4","pets-ood","icl")+runs("icl-pets-512x4-s12","pets-ood","icl"),
 "oracle pets 256x8 s0-5": main["pets-ood"]["oracle"]+runs("oracle-pets-256x8-s345","pets-ood","oracle"),
 "oracle pets 512x4 s0-2": runs("oracle-pets-512x4","pets-ood","oracle"),
 "oracle pets 512x4 s0-5": runs("oracle-pets-512x4","pets-ood","oracle")+runs("oracle-pets-512x4-s345","pets-ood","oracle"),
 "btl uf 256x8 s0-2": main["uf-p-4-synthetic"]["btl"],
 "btl uf 512x4 s0-2": runs("btl-uf-512x4","uf-p-4-synthetic","btl"),
 "oracle uf 256x8 s0-2": main["uf-p-4-synthetic"]["oracle"],
 "oracle uf 512x4 s0": runs("oracle-uf-512x4","uf-p-4-synthetic","oracle"),
}
for k,v in sets.items():
    a=aggregate_over_seeds([{s:x[s] for s in ("test",)} for x in v])["test"]
    f=lambda m: f"{100*a[m]['mean']:.1f} [{100*a[m]['ci_low']:.1f}, {100*a[m]['ci_high']:.1f}]"
    print(k, "| all", f("accuracy"), "| contested", f("contested_accuracy"), "| per-seed all", [round(100*x["test"]["accuracy"],1) for x in v], "| sec", [round(x["train"]["run_seconds"]) for x in v])
