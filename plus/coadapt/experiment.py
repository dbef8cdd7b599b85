"""The co-adaptation ablation of notebook 04: PLUS and the paper's ablations, trained on the same records with the
same budget of rollout batches, then scored on the held-out pairs of every test split.

- ``plus``: both models trained (`plus.coadapt.train_plus`);
- ``plus-static-rm``: the summarizer trained against the reward model as it starts (never updated);
- ``plus-untrained``: the summarizer frozen, the reward model trained on its samples (the same loop);
- ``btl``: one Bradley-Terry reward model, no summary (`plus.baselines`), trained for as many pair updates.

Each loop variant probes held-out accuracy every ``curve_every`` rollout batches on a fixed subset (the learning
curves); at the end every variant is scored on all test records with one summary sampled per context
(`plus.coadapt.evaluation.summary_accuracy`) and writes ``eval.json`` (per-pair credits, summaries, seconds).
``table.json`` (``../shared/RESULTS.md``) holds the mean over seeds with a bootstrap interval over seeds and test
pairs (`plus.evaluation.table_rows`) and the paper's *reported* numbers where the paper has the cell. A run whose
``eval.json`` matches its config is read, not trained again, so the notebook re-executes from the logs."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from plus.artifacts import as_read_back, read_json, read_metrics, write_json, write_table
from plus.coadapt.config import CoadaptConfig, coadapt_config
from plus.coadapt.evaluation import summary_accuracy
from plus.coadapt.loop import Probe, train_plus

VARIANTS: tuple[str, ...] = ("plus", "plus-static-rm", "plus-untrained", "btl")
LOOP_VARIANTS: tuple[str, ...] = VARIANTS[:3]
LABELS = {
    "plus": "PLUS (both trained)",
    "plus-static-rm": "trained summarizer + static reward model",
    "plus-untrained": "static summarizer + trained reward model (PLUS-untrained)",
    "btl": "BTL (no summary)",
}
REPORTED_ABLATION: dict[tuple[str, str], float] = {("uf-p-2-synthetic", "plus-static-rm"): 0.5345}
"""The paper's co-adaptation ablation cells our main-table quotes (`plus.evaluation.REPORTED_PLUS_TABLE`) lack:
trained summarizer + static reward model on UF-P-2 (REFERENCE.md 2.2, *reported*)."""


@dataclass(frozen=True)
class AblationSettings:
    """What one profile's ablation runs: data, budget, seeds and curves; ``changes`` go to `coadapt_config`."""

    profile: str
    datasets: tuple[str, ...]
    num_train: int
    """Training records per data set (one episode or more: ``steps`` rollout batches in all)."""
    num_test: int
    """Records per held-out split."""
    steps: int
    """Rollout batches per loop variant."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Training seeds (one data set per name, built with seed 0, as in the paper)."""
    curve_every: int = 10
    """Rollout batches between two points of a learning curve."""
    curve_records: int = 64
    """Held-out ``test`` records the learning curves are measured on (the first ones)."""
    variants: tuple[str, ...] = VARIANTS
    changes: dict = field(default_factory=dict)
    """`CoadaptConfig` fields changed from the profile's (`coadapt_config`)."""

    @property
    def loop_variants(self) -> tuple[str, ...]:
        """The variants run that train in the loop (`LOOP_VARIANTS`), in their order."""
        return tuple(v for v in LOOP_VARIANTS if v in self.variants)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"Unknown ablation variants {unknown}; choose from {VARIANTS}")
        for name in ("num_train", "num_test", "steps", "curve_every", "curve_records"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AblationSettings.{name} must be a positive integer, got {value!r}")
        if not self.seeds or not self.datasets:
            raise ValueError("AblationSettings needs at least one data set and one seed")


SETTINGS: dict[str, AblationSettings] = {
    "smoke": AblationSettings("smoke", ("pets-ood",), num_train=16, num_test=4, steps=2, seeds=(0,), curve_every=1,
                              curve_records=4),
    "cpu": AblationSettings("cpu", ("pets-ood", "uf-p-2-synthetic"), num_train=256, num_test=352, steps=60),
    "gpu": AblationSettings("gpu", ("pets-ood", "uf-p-2-synthetic"), num_train=4096, num_test=512, steps=16,
                            curve_every=2, curve_records=256),
}  # fmt: skip
"""cpu: 352 records per split give 178 contested Pets ``test`` pairs and 180 on ``test_ood`` (about half the pairs
are contested; 400 records, as notebook 03 uses, would give 204); the seed-0 runs in the book were made at 352, so
the change waits for the next runs. gpu: the paper's rollout batch of 256, one episode over 4096 records."""


def ablation_settings(profile: str, **changes) -> AblationSettings:
    if profile not in SETTINGS:
        raise ValueError(f"Unknown profile {profile!r} for the ablation; choose one of {sorted(SETTINGS)}")
    return replace(SETTINGS[profile], **changes)


def variant_config(config: CoadaptConfig, variant: str) -> CoadaptConfig:
    """``config`` with the switches of a loop variant (`LOOP_VARIANTS`)."""
    if variant not in LOOP_VARIANTS:
        raise ValueError(f"{variant!r} is not a loop variant; choose one of {LOOP_VARIANTS}")
    return replace(
        config, train_reward_model=variant != "plus-static-rm", train_summarizer=variant != "plus-untrained"
    )


def heldout_probe(records: Sequence[dict], config: CoadaptConfig, seed: int = 0, batch_size: int = 16) -> Probe:
    """A `plus.coadapt.Probe`: ``heldout/accuracy`` and ``heldout/contested_accuracy`` of the loop's reward model
    reading one seeded summary per held-out context from the summarizer as it is."""
    if not records:
        raise ValueError("heldout_probe needs at least one held-out record")

    def probe(policy, tokenizer, reward_model) -> dict[str, float]:
        splits, _ = summary_accuracy(policy, tokenizer, reward_model, records, config, seed, batch_size)
        pooled = list(splits.values())
        metrics = {"heldout/accuracy": sum(m["accuracy"] * m["num_pairs"] for m in pooled) / len(records)}
        contested = sum(m["num_contested"] for m in pooled)
        if contested:
            total = sum((m["contested_accuracy"] or 0.0) * m["num_contested"] for m in pooled)
            metrics["heldout/contested_accuracy"] = total / contested
        return metrics

    return probe


@dataclass
class Ablation:
    """The ablation at one profile, writing ``output_dir/<data set>/<variant>/seed-<s>/``."""

    settings: AblationSettings
    output_dir: Path
    _records: dict[str, list[dict]] = field(default_factory=dict, repr=False)

    def records(self, dataset: str) -> list[dict]:
        if dataset not in self._records:
            from plus.data.registry import build_dataset

            built = build_dataset(dataset, seed=0, num_train=self.settings.num_train, num_test=self.settings.num_test)
            self._records[dataset] = built
        return self._records[dataset]

    def split(self, dataset: str, train: bool) -> list[dict]:
        return [r for r in self.records(dataset) if (r["split"] == "train") == train]

    def run_dir(self, dataset: str, variant: str, seed: int) -> Path:
        return self.output_dir / dataset / variant / f"seed-{seed}"

    def config(self, dataset: str, variant: str, seed: int) -> CoadaptConfig:
        """The loop's config of one run: the profile's, `AblationSettings.changes`, the variant's switches."""
        base = coadapt_config(self.settings.profile, **self.settings.changes)
        per_episode = self.settings.num_train // base.rollout_batch_size
        config = replace(
            base, seed=seed, max_steps=self.settings.steps, num_episodes=math.ceil(self.settings.steps / per_episode),
            checkpoint_every=10,
        )  # fmt: skip
        return variant_config(config, variant) if variant in LOOP_VARIANTS else config

    def _fingerprint(self, dataset: str, variant: str, seed: int) -> dict:
        return {
            "variant": variant,
            "config": asdict(self.config(dataset, variant, seed)),
            "num_train": self.settings.num_train,
            "num_test": self.settings.num_test,
        }

    def evaluation(self, dataset: str, variant: str, seed: int) -> dict | None:
        """The run's ``eval.json`` when it was written for this very run (same config and sizes), else None."""
        path = self.run_dir(dataset, variant, seed) / "eval.json"
        if not path.exists():
            return None
        payload = read_json(path)
        expected = as_read_back(self._fingerprint(dataset, variant, seed))
        return payload if payload.get("run") == expected else None

    def run(self, dataset: str, variant: str, seed: int) -> dict:
        """Train (or resume) and evaluate one run; read its ``eval.json`` instead when it is done."""
        done = self.evaluation(dataset, variant, seed)
        if done is not None:
            return done
        directory = self.run_dir(dataset, variant, seed)
        train, test = self.split(dataset, True), self.split(dataset, False)
        config = self.config(dataset, variant, seed)
        began = time.perf_counter()
        if variant == "btl":
            splits, summaries = self._train_btl(config, train, test, directory, seed), None
        else:
            curve = [r for r in test if r["split"] == "test"][: self.settings.curve_records]
            probe = heldout_probe(curve, config, seed, config.micro_batch_size)
            result = train_plus(config, train, directory, probe=probe, probe_every=self.settings.curve_every)
            splits, summaries = summary_accuracy(
                result.policy, result.tokenizer, result.reward_model, test, config, seed, config.micro_batch_size
            )
        payload = {
            "run": as_read_back(self._fingerprint(dataset, variant, seed)),
            "splits": splits,
            "summaries": summaries,
            "seconds": time.perf_counter() - began,
        }
        write_json(directory / "eval.json", payload)
        return payload

    def _train_btl(self, config: CoadaptConfig, train: list[dict], test: list[dict], directory: Path, seed: int):
        """BTL with the loop's reward model and learning rate, for as many pair updates as the loop's reward
        model gets (``steps`` x contexts per batch x ``reward_epochs`` / the records: whole epochs, rounded up)."""
        from plus.baselines import BaselineConfig, build_method
        from plus.evaluation import evaluate_method
        from plus.train import TrainConfig, train_reward_model

        method = build_method(BaselineConfig("btl", reward_model=config.reward_model), seed=seed)
        pairs = self.settings.steps * config.rollout_batch_size * config.reward_epochs
        epochs = max(1, math.ceil(pairs / len(train)))
        schedule = TrainConfig(
            learning_rate=config.reward_lr, head_learning_rate=config.reward_lr, batch_size=config.train_batch_size,
            num_epochs=epochs, seed=seed,
        )  # fmt: skip
        train_reward_model(method, train, schedule, directory)
        return evaluate_method(method, test)

    def run_all(self) -> None:
        for dataset in self.settings.datasets:
            for seed in self.settings.seeds:
                for variant in self.settings.variants:
                    self.run(dataset, variant, seed)

    def results(self) -> dict:
        """The finished runs in `plus.evaluation.table_rows`' shape: {"config": {"seeds"}, "aggregate":
        {data set: {variant: {split: metrics}}}}, with the seeds each cell rests on."""
        from plus.evaluation import aggregate_over_seeds

        aggregate: dict = {}
        seeds: dict = {}
        for dataset in self.settings.datasets:
            for variant in self.settings.variants:
                done = [(s, self.evaluation(dataset, variant, s)) for s in self.settings.seeds]
                done = [(s, e) for s, e in done if e is not None]
                if done:
                    aggregate.setdefault(dataset, {})[variant] = aggregate_over_seeds([e["splits"] for _, e in done])
                    seeds[dataset, variant] = [s for s, _ in done]
        return {"config": {"seeds": list(self.settings.seeds)}, "aggregate": aggregate, "seeds": seeds}

    def rows(self) -> list[dict]:
        """``table.json`` rows: `plus.evaluation.table_rows` with each cell's own seeds and the ablation's
        reported cells (`REPORTED_ABLATION`)."""
        from plus.evaluation import table_rows

        results = self.results()
        rows = []
        for row in table_rows({"config": results["config"], "aggregate": results["aggregate"]}):
            row["seeds"] = results["seeds"][row["dataset"], row["method"]]
            if row["subset"] == "contested" and row["split"] == "test":
                row["reported"] = REPORTED_ABLATION.get((row["dataset"], row["method"]), row["reported"])
            rows.append(row)
        return rows

    def write_table(self) -> list[dict]:
        rows = self.rows()
        write_table(self.output_dir / "table.json", rows)
        return rows

    def curves(self) -> pd.DataFrame:
        """The probe rows of every loop run of these settings (`AblationSettings.loop_variants`; another variant's
        run in the same folder, finished or not, is left out): columns dataset, variant, seed, step and the probe's
        metrics."""
        frames = []
        for dataset in self.settings.datasets:
            for variant in self.settings.loop_variants:
                for seed in self.settings.seeds:
                    path = self.run_dir(dataset, variant, seed) / "probe.jsonl"
                    if path.exists():
                        frame = pd.DataFrame(read_metrics(path)).assign(dataset=dataset, variant=variant, seed=seed)
                        frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def timing(self) -> pd.DataFrame:
        """Per finished run: rollout batches, seconds per batch (from ``metrics.jsonl``) and the run's seconds
        (training and evaluation, as measured when it ran)."""
        rows = []
        for dataset in self.settings.datasets:
            for variant in self.settings.variants:
                for seed in self.settings.seeds:
                    done = self.evaluation(dataset, variant, seed)
                    if done is None:
                        continue
                    row = {"dataset": dataset, "variant": variant, "seed": seed, "seconds": done["seconds"]}
                    metrics = self.run_dir(dataset, variant, seed) / "metrics.jsonl"
                    if variant in LOOP_VARIANTS and metrics.exists():
                        steps = pd.DataFrame(read_metrics(metrics))
                        row |= {"batches": len(steps), "seconds_per_batch": steps["perf/seconds_per_step"].mean()}
                    rows.append(row)
        return pd.DataFrame(rows)


def ablation_bars(rows: Sequence[dict]) -> pd.DataFrame:
    """The checks that must hold before the ablation's comparison means anything, on ``table.json`` rows, one
    per (bar, paper column) with the measured value, its interval, the threshold and ``holds`` (None: not run):

    - BTL at chance (50 +- 5%) on contested pairs: a user-blind model cannot rank them;
    - PLUS-untrained far above chance on the agreed pairs (lower bound >= 50% + `FAR_ABOVE`): a reward model
      co-trained in this loop learns what every user shares, so a flat contested score is not a dead loop."""
    from plus.evaluation import CHANCE_BAND, FAR_ABOVE, PAPER_COLUMNS, find_row

    out = []
    for column, (dataset, split) in PAPER_COLUMNS.items():
        btl = find_row(rows, dataset, split, "contested", "btl")
        agreed = find_row(rows, dataset, split, "agreed", "plus-untrained")
        checks = [
            ("BTL at chance on contested", btl, f"{0.5 - CHANCE_BAND:.2f}-{0.5 + CHANCE_BAND:.2f}",
             lambda c: abs(c["mean"] - 0.5) <= CHANCE_BAND),
            ("PLUS-untrained learns the agreed pairs", agreed, f"lower bound >= {0.5 + FAR_ABOVE:.2f}",
             lambda c: c["ci_low"] >= 0.5 + FAR_ABOVE),
        ]  # fmt: skip
        for name, cell, threshold, test in checks:
            if cell is None and not any(r["dataset"] == dataset and r["split"] == split for r in rows):
                continue  # a column this run has no data for
            out.append({
                "bar": name, "column": column, "measured": None if cell is None else cell["mean"],
                "95% interval": None if cell is None else (cell["ci_low"], cell["ci_high"]), "threshold": threshold,
                "holds": None if cell is None else bool(test(cell)),
            })  # fmt: skip
    return pd.DataFrame(out)


def compare(first: dict, second: dict) -> str:
    """How ``first`` stands to ``second`` (two ``table.json`` rows), judged by their 95% intervals."""
    if first["ci_low"] > second["ci_high"]:
        return "above beyond the noise"
    if first["ci_high"] < second["ci_low"]:
        return "below beyond the noise"
    return "no difference beyond the noise"


def ablation_note(rows: Sequence[dict], timing: pd.DataFrame) -> str:
    """The page's reading of the ablation, every number from ``rows`` (``table.json``) and ``timing``
    (`Ablation.timing`): per paper column, PLUS against each ablation on the contested pairs."""
    from plus.evaluation import PAPER_COLUMNS, find_row, format_interval

    lines = []
    for column, (dataset, split) in PAPER_COLUMNS.items():
        plus = find_row(rows, dataset, split, "contested", "plus")
        if plus is None:
            continue
        seeds = ", ".join(map(str, plus["seeds"]))
        parts = [f"- {column} (contested pairs, n = {plus['n']}, seeds {seeds}): PLUS {format_interval(plus)}"]
        for method in VARIANTS[1:]:
            other = find_row(rows, dataset, split, "contested", method)
            if other is not None:
                gap = 100 * (plus["mean"] - other["mean"])
                parts.append(
                    f"{LABELS[method]} {format_interval(other)} (PLUS {gap:+.1f} points, {compare(plus, other)})"
                )
        cells = {m: find_row(rows, dataset, split, "contested", m) for m in VARIANTS}
        reported = [f"{LABELS[m]} {100 * c['reported']:.1f}" for m, c in cells.items() if c and c["reported"]]
        line = "; ".join(parts) + "."
        if reported:
            line += " The paper *reported* " + ", ".join(reported) + " (its models and data, not ours)."
        lines.append(line)
    if not timing.empty:
        total = timing["seconds"].sum() / 60
        per = timing.groupby("variant")["seconds"].sum().div(60).reindex(VARIANTS).dropna()
        lines.append(
            f"- Compute: {total:.0f} min of training and evaluation in all ("
            + ", ".join(f"{LABELS[v]} {m:.0f} min" for v, m in per.items())
            + "), as measured when each run ran."
        )
    lines.append("- Intervals: 95% bootstrap over the seeds and the test pairs.")
    return "\n".join(lines)


def gap_trend(
    curves: pd.DataFrame,
    dataset: str,
    key: str = "heldout/contested_accuracy",
    first: str = "plus",
    second: str = "plus-untrained",
) -> dict | None:
    """The trend of ``first``'s learning curve over ``second``'s (`Ablation.curves`, mean over seeds per step):
    the least-squares slope of their gap per rollout batch, its 95% interval (t quantile, n - 2 degrees of
    freedom), the gap at the last step and, when the slope's interval lies above zero, the rollout batches from
    the last step at which the fitted gap reaches `GAP`. None when the two curves share fewer than 3 steps."""
    if curves.empty or key not in curves:
        return None
    mean = curves[curves["dataset"] == dataset].groupby(["variant", "step"])[key].mean()
    if first not in mean.index.get_level_values(0) or second not in mean.index.get_level_values(0):
        return None
    gap = (mean[first] - mean[second]).dropna()
    if len(gap) < 3:
        return None
    x, y = gap.index.to_numpy(float), gap.to_numpy(float)
    slope, intercept = np.polyfit(x, y, 1)
    residuals = y - (intercept + slope * x)
    stderr = math.sqrt(residuals @ residuals / (len(x) - 2) / ((x - x.mean()) @ (x - x.mean())))
    half = t_quantile(0.975, len(x) - 2) * stderr
    last = int(x.max())
    fitted_last = intercept + slope * last
    rising = slope - half > 0
    return {
        "points": len(x), "last_step": last, "gap_last": float(y[-1]), "slope": float(slope),
        "slope_ci": (float(slope - half), float(slope + half)),
        "batches_to_gap": max(0, math.ceil((GAP - fitted_last) / slope)) if rising else None,
    }  # fmt: skip


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile (0.5 < q < 1) of Student's t with ``df`` degrees of freedom: bisection on its CDF,
    integrated numerically from the density (no scipy in the environment's declared packages)."""
    if not 0.5 < q < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < q < 1 and df >= 1, got q={q}, df={df}")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def mass(upper: float) -> float:  # P(0 < T < upper)
        grid = np.linspace(0.0, upper, 4001)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid**2 / df))
        return float(np.trapezoid(density, grid))

    low, high = 0.0, 1.0
    while mass(high) < q - 0.5:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if mass(middle) < q - 0.5 else (low, middle)
    return (low + high) / 2


GAP = 0.10
"""The contested-accuracy gap PLUS must show over PLUS-untrained on Pets (10 points)."""


def config_changes(assignments: Sequence[str]) -> dict:
    """``["reward_epochs=1", "temperature=1.0"]`` as `CoadaptConfig` changes (values read as JSON, else kept as
    text), with a clear error for a malformed assignment or a field the config does not have."""
    import json
    from dataclasses import fields

    names = {f.name for f in fields(CoadaptConfig)}
    changes = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--set {assignment!r}: expected FIELD=VALUE")
        if name not in names:
            raise ValueError(f"--set {assignment!r}: CoadaptConfig has no field {name!r}; fields: {sorted(names)}")
        try:
            changes[name] = json.loads(text)
        except json.JSONDecodeError:
            changes[name] = text
    return changes


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m plus.coadapt.experiment --profile cpu --output-dir results/cpu/04_train_plus``: train and
    evaluate the runs in turn (resuming from their checkpoints, skipping the finished ones), as notebook 04 does,
    then write ``table.json``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m plus.coadapt.experiment", description=main.__doc__)
    parser.add_argument("--profile", default="cpu", choices=sorted(SETTINGS))
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--datasets", help="comma-separated data sets (default: the profile's)")
    parser.add_argument("--variants", help=f"comma-separated, from {','.join(VARIANTS)} (default: all)")
    parser.add_argument("--seeds", help="comma-separated training seeds (default: the profile's)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="change a CoadaptConfig field for every run (a lever), e.g. --set reward_epochs=1; VALUE is read as "
        "JSON, else as text; use its own --output-dir",
    )  # fmt: skip
    args = parser.parse_args(argv)
    changes: dict = {"changes": config_changes(args.set)} if args.set else {}
    if args.datasets:
        changes["datasets"] = tuple(name.strip() for name in args.datasets.split(","))
    if args.variants:
        changes["variants"] = tuple(name.strip() for name in args.variants.split(","))
    if args.seeds:
        changes["seeds"] = tuple(int(seed) for seed in args.seeds.split(","))
    experiment = Ablation(ablation_settings(args.profile, **changes), Path(args.output_dir))
    experiment.run_all()
    experiment.write_table()


if __name__ == "__main__":
    main()
