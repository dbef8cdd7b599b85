"""One evaluation for every reward model: pairwise accuracy on held-out pairs, per split, over seeds.

Pairwise accuracy is the mean credit of the held-out pairs: 1 when r(chosen) > r(rejected), 1/2 for a tie,
0 otherwise (`pair_credit`: the one tie rule of the package, also the PReF protocol's), computed on each
record's ``eval`` pair. Splits: ``test`` (seen users, held-out pairs),
``test_new_users``, ``test_new_prompts`` (new topics) and ``test_ood``. Over seeds we report the mean and
the sample standard deviation (ddof = 1; 0 for a single seed).

`run_benchmark` trains and evaluates methods x data sets x seeds and writes one JSON artifact and its
``table.json`` rows (`table_rows`); `sanity_bars` checks those rows and `interval_table` lays them out beside
the paper's reported numbers (`REPORTED_PLUS_TABLE`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from plus.artifacts import read_json, write_json, write_table
from plus.baselines import (
    METHOD_NAMES,
    METHODS,
    BaselineConfig,
    RewardMethod,
    TextEmbedder,
    build_method,
    method_label,
)
from plus.reward_model import FrozenFeatureCache, RewardModelConfig
from plus.train import TrainConfig, seed_everything, train_reward_model

logger = logging.getLogger(__name__)

EVAL_SPLITS: tuple[str, ...] = ("test", "test_new_users", "test_new_prompts", "test_ood")

REPORTED_PLUS_TABLE: dict[str, dict[str, float]] = {
    "BTL": {"Pets": 44.15, "UF-P-2": 58.12, "UF-P-4": 53.53, "Pets-OOD": 49.5, "PRISM": 59.8},
    "DPL": {"Pets": 46.20, "UF-P-2": 58.53, "UF-P-4": 55.22, "Pets-OOD": 49.0},
    "VPL": {"Pets": 100.0, "UF-P-2": 58.37, "UF-P-4": 54.20, "Pets-OOD": 44.83, "PRISM": 60.4},
    "ICL": {"Pets": 100.0, "UF-P-2": 59.62, "UF-P-4": 57.22, "Pets-OOD": 72.50, "PRISM": 60.1},
    "PLUS-untrained": {"Pets": 96.20, "UF-P-2": 59.90, "UF-P-4": 56.89, "Pets-OOD": 85.83},
    "PLUS": {"Pets": 99.80, "UF-P-2": 69.40, "UF-P-4": 62.10, "Pets-OOD": 93.67, "PRISM": 62.9},
    "Oracle": {"Pets": 100.0, "UF-P-2": 69.10, "UF-P-4": 70.60},
}
"""PLUS main table, reward-model accuracy (%), Qwen2.5-0.5B reward model, 3B summarizer, as REPORTED
(REFERENCE.md 2.2, read from secondary sources, not verified against the paper): quotations, not our results.
PAL is not in the paper's table."""

PAPER_COLUMNS: dict[str, tuple[str, str]] = {
    "Pets": ("pets-ood", "test"),
    "Pets-OOD": ("pets-ood", "test_ood"),
    "UF-P-2": ("uf-p-2-synthetic", "test"),
    "UF-P-4": ("uf-p-4-synthetic", "test"),
}
"""Paper column -> (our data set, split). Pets-OOD's ``train`` and ``test`` splits are exactly Pets' (the same
builder and seed; OOD only adds ``test_ood``), so one training run on ``pets-ood`` gives both Pets columns.
UF-P columns come from the offline UF-P-like synthetic users, not UltraFeedback."""

KL_WEIGHTS: dict[str, float] = {"pets": 1e-4, "pets-ood": 1e-4, "uf-p-2-synthetic": 0.0, "uf-p-4-synthetic": 3e-6}
"""VPL's KL weight per data set (the VPL paper's: 1e-4 Pets, 0 UF-P-2, 3e-6 UF-P-4)."""


SUBSETS: dict[str, tuple[str, str]] = {
    "all": ("accuracy", "outcomes"),
    "contested": ("contested_accuracy", "contested_outcomes"),
    "agreed": ("agreed_accuracy", "agreed_outcomes"),
}
"""Table subsets (``../shared/RESULTS.md``) -> (the `pairwise_accuracy` metric, its per-pair credits)."""
OUTCOMES: dict[str, str] = dict(SUBSETS.values())
"""`pairwise_accuracy` metric -> the per-pair credits behind it."""


def pair_credit(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Per pair: 1.0 when ``chosen`` scores above ``rejected``, 0.5 on a tie, 0.0 otherwise."""
    return (chosen > rejected).float() + 0.5 * (chosen == rejected).float()


def bootstrap_interval(
    outcomes: Sequence[Sequence[float]], level: float = 0.95, num_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean credit over seeds and test items: ``outcomes[s][i]`` is item
    i's credit under seed s. Each resample draws seeds with replacement and, independently, items with
    replacement, so the interval covers both the training noise and the finite test set. When every seed has
    the same items (the same pairs, in the same order) one draw of items serves all drawn seeds; when the
    seeds' lists differ in length (other items per seed, e.g. new users drawn per seed), each drawn seed draws
    its own items."""
    import numpy as np

    rows = [np.asarray(row, dtype=float) for row in outcomes]
    if not rows or any(row.ndim != 1 or row.size == 0 for row in rows):
        raise ValueError(f"bootstrap_interval needs a (seeds, pairs) table of non-empty rows, got {len(rows)} rows")
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, len(rows), size=(num_resamples, len(rows)))
    if len({row.size for row in rows}) == 1:
        table = np.stack(rows)  # (S, N)
        pairs = rng.integers(0, table.shape[1], size=(num_resamples, table.shape[1]))
        means = np.array([table[s][:, p].mean() for s, p in zip(seeds, pairs, strict=True)])
    else:
        means = np.array(
            [np.concatenate([rng.choice(rows[k], size=rows[k].size) for k in drawn]).mean() for drawn in seeds]
        )
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


@torch.no_grad()
def pairwise_accuracy(method: RewardMethod, records: Sequence[dict], batch_size: int = 64) -> dict[str, float]:
    """Accuracy on the ``eval`` pairs of ``records``: ``accuracy`` over all, ``contested_accuracy`` and
    ``agreed_accuracy`` over records whose ``contested`` flag is True / False (None when there are none),
    ``num_pairs``, and the per-pair credits behind each (``outcomes``, ``contested_outcomes``,
    ``agreed_outcomes``, in record order) for `bootstrap_interval`. Calls ``method.adapt(records)`` first
    (new users' weights for PAL); eval mode."""
    records = list(records)
    if not records:
        raise ValueError("pairwise_accuracy needs at least one record")
    was_training = method.training
    method.eval()
    method.adapt(records)
    correct: list[float] = []
    for start in range(0, len(records), batch_size):
        chosen, rejected = method.pair_rewards(records[start : start + batch_size], "eval")  # (b,) each
        correct.extend(pair_credit(chosen, rejected).tolist())
    method.train(was_training)
    return accuracy_from_credits(correct, records)


def accuracy_from_credits(correct: Sequence[float], records: Sequence[dict]) -> dict:
    """`pairwise_accuracy`'s metrics from the per-pair credits ``correct`` of ``records`` (in order): the shares
    over all, contested and agreed records, the counts, and the credits behind each."""
    correct = [float(c) for c in correct]
    if len(correct) != len(records):
        raise ValueError(f"{len(correct)} credits for {len(records)} records")

    def share(credits: list[float]) -> float | None:
        return sum(credits) / len(credits) if credits else None

    contested = [c for c, r in zip(correct, records, strict=True) if r.get("contested") is True]
    agreed = [c for c, r in zip(correct, records, strict=True) if r.get("contested") is False]
    return {
        "accuracy": share(correct),
        "contested_accuracy": share(contested),
        "agreed_accuracy": share(agreed),
        "num_pairs": len(correct),
        "num_contested": len(contested),
        "outcomes": correct,
        "contested_outcomes": contested,
        "agreed_outcomes": agreed,
    }


MAJORITY = "majority"
"""Method key of the user-blind ceiling's rows in ``table.json`` (`majority_accuracy`): a reference, not a run."""
REFERENCE_LABELS: dict[str, str] = {MAJORITY: "User-blind ceiling"}
"""Labels of the reference rows that `run_benchmark` adds beside the methods."""


def majority_accuracy(records: Sequence[dict], splits: Sequence[str] = EVAL_SPLITS) -> dict[str, dict]:
    """The user-blind ceiling per split: `pairwise_accuracy`'s metrics for the credits of the training users'
    majority vote (each record's ``majority_credit``, `plus.data.schema.majority_credit`). No user-blind model
    can beat it on average: it is 50% on pairs the population splits evenly (Pets' contested pairs) and higher
    where most users agree (UF-P-4's). Splits whose records lack ``majority_credit`` (real users) are left out."""
    out = {}
    for split in splits:
        subset = [record for record in records if record["split"] == split]
        if subset and all(record.get("majority_credit") is not None for record in subset):
            out[split] = accuracy_from_credits([record["majority_credit"] for record in subset], subset)
    return out


def evaluate_method(
    method: RewardMethod, records: Sequence[dict], splits: Sequence[str] = EVAL_SPLITS, batch_size: int = 64
) -> dict[str, dict[str, float]]:
    """`pairwise_accuracy` per split of ``splits`` that ``records`` contain: {split: metrics}."""
    out = {}
    for split in splits:
        subset = [record for record in records if record["split"] == split]
        if subset:
            out[split] = pairwise_accuracy(method, subset, batch_size)
    return out


def aggregate_over_seeds(per_seed: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict]]:
    """{split: {metric: {"mean", "std", "values"}}} from one `evaluate_method` result per seed. The std is the
    sample standard deviation (0 for one seed); metrics that are None in some seed are averaged over the rest."""
    if not per_seed:
        raise ValueError("aggregate_over_seeds needs at least one seed's results")
    out: dict[str, dict[str, dict]] = {}
    for split in per_seed[0]:
        out[split] = {}
        for metric in per_seed[0][split]:
            if metric.endswith("outcomes"):
                continue
            values = [result[split][metric] for result in per_seed if result.get(split, {}).get(metric) is not None]
            if not values:
                continue
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            out[split][metric] = {"mean": statistics.fmean(values), "std": std, "values": values}
            outcomes = [result[split].get(OUTCOMES.get(metric, "")) for result in per_seed]
            if all(outcomes) and len({len(o) for o in outcomes}) == 1:
                low, high = bootstrap_interval(outcomes)
                out[split][metric].update(ci_low=low, ci_high=high, n=len(outcomes[0]))
    return out


def paper_label(method: str) -> str | None:
    """The paper's row name of a method key: a registered baseline's label, "PLUS" for ``plus`` (trained by
    `plus.coadapt`, not a baseline), else None (no reported row)."""
    if method == "plus":
        return "PLUS"
    try:
        return method_label(method)
    except KeyError:
        return REFERENCE_LABELS.get(method)


def table_rows(results: dict) -> list[dict]:
    """The rows of ``table.json`` (``../shared/RESULTS.md``) from a `run_benchmark` artifact: one per data set,
    split, subset and method, metric ``accuracy``, with its bootstrap interval. ``reported`` is the paper's
    number (`REPORTED_PLUS_TABLE`) on the ``contested`` subset of the paper's columns (`PAPER_COLUMNS`): the
    paper's Pets test pairs are the contested dog-vs-cat ones (its BTL scores 44%, impossible if half the pairs
    were agreed ones a user-blind model gets right), and every UF-P pair is contested by construction. The
    user-blind ceiling's rows (method `MAJORITY`) depend on the data alone: their ``seeds`` is the data seed."""
    columns = {value: key for key, value in PAPER_COLUMNS.items()}
    seeds = list(results["config"]["seeds"])
    rows = []
    for dataset, methods in results["aggregate"].items():
        for method, splits in methods.items():
            for split, metrics in splits.items():
                for subset, (metric, _) in SUBSETS.items():
                    cell = metrics.get(metric)
                    if not cell or "ci_low" not in cell:
                        continue
                    column = columns.get((dataset, split)) if subset == "contested" else None
                    reported = REPORTED_PLUS_TABLE.get(paper_label(method), {}).get(column)
                    rows.append(
                        {
                            "dataset": dataset,
                            "split": split,
                            "subset": subset,
                            "method": method,
                            "metric": "accuracy",
                            "mean": cell["mean"],
                            "ci_low": cell["ci_low"],
                            "ci_high": cell["ci_high"],
                            "n": cell["n"],
                            "seeds": seeds if method not in REFERENCE_LABELS else [results["config"]["data_seed"]],
                            "reported": reported / 100 if reported is not None else None,
                        }
                    )
    return rows


@dataclass(frozen=True)
class BenchmarkConfig:
    """The baseline columns of the PLUS main table: methods x data sets x seeds."""

    datasets: tuple[str, ...] = ("pets-ood", "uf-p-2-synthetic", "uf-p-4-synthetic")
    """Names for `plus.data.build_dataset`."""
    methods: tuple[str, ...] = METHOD_NAMES
    """Names from `plus.baselines.METHODS` (default: the built-in ones, `METHOD_NAMES`)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Training seeds (initialisation, batch order, sampled latents)."""
    data_seed: int = 0
    """One data set per name, shared by all training seeds (as in the paper: fixed data, 3 training seeds)."""
    num_train: int = 1024
    """Training records per data set."""
    num_test: int = 200
    """Records per held-out split."""
    splits: tuple[str, ...] = EVAL_SPLITS
    """Held-out splits to evaluate (those a data set has); plus-untrained summarizes only these and ``train``."""
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    """Backbone of the text methods."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation of the text methods (its seed is replaced by each of `seeds`)."""
    embedding_train: TrainConfig = field(default_factory=lambda: TrainConfig(head_learning_rate=1e-3, num_epochs=10))
    """Optimisation of vpl and pal (small networks on frozen embeddings: more epochs, larger learning rate)."""
    embedding_model: str = "all-minilm-l6-v2"
    """Frozen sentence encoder of vpl and pal."""
    summarizer_model: str = "Qwen/Qwen2.5-3B-Instruct"
    """Frozen summarizer of plus-untrained."""
    max_summary_tokens: int = 256
    """Cap on generated summary tokens."""
    summary_batch_size: int = 8
    """Contexts per summarizer generation call."""
    eval_batch_size: int = 64
    """Records per scoring batch at evaluation."""
    skip: tuple[str, ...] = ()
    """"data set:method" entries of the product `datasets` x `methods` that are not run (the notebook says why;
    their cells are absent from the table, and sanity bars that need them read "not run")."""
    frozen_cache: bool = True
    """Text methods whose reward model freezes its bottom blocks read their states from one
    `plus.reward_model.FrozenFeatureCache` per data set (computed once, without dropout) instead of recomputing
    them every epoch, seed and method."""

    @property
    def grid(self) -> set[str]:
        """Every "data set:method" of the product `datasets` x `methods` (what `skip` may name)."""
        return {f"{dataset}:{method}" for dataset in self.datasets for method in self.methods}

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"BenchmarkConfig.methods has unknown methods {unknown}; choose from {sorted(METHODS)}")
        if not self.seeds or not self.datasets or not self.methods:
            raise ValueError("BenchmarkConfig needs at least one data set, method and seed")
        if any(split not in EVAL_SPLITS for split in self.splits):
            raise ValueError(f"BenchmarkConfig.splits must be among {EVAL_SPLITS}, got {self.splits}")
        if self.num_train < 1 or self.num_test < 1:
            raise ValueError(f"BenchmarkConfig needs positive sizes, got {self.num_train}, {self.num_test}")
        stray = [entry for entry in self.skip if entry not in self.grid]
        if stray:
            raise ValueError(f"BenchmarkConfig.skip has entries {stray} outside the product of datasets x methods")


CPU_SKIP: tuple[str, ...] = (
    "pets-ood:plus-untrained",
    "uf-p-2-synthetic:plus-untrained",
    "uf-p-4-synthetic:plus-untrained",
    "uf-p-2-synthetic:icl",
    "uf-p-4-synthetic:icl",
    "uf-p-2-synthetic:dpl",
    "uf-p-4-synthetic:dpl",
)
"""Runs the cpu profile leaves out, for time on two cores (measured per seed at this config: BTL ~120 s, Oracle
~290 s, ICL ~1,170 s on Pets; BTL ~500 s on UF-P-4, whose inputs are 2-3 times longer): plus-untrained needs
SmolLM2 summaries of every context (512 + 2 x 400 per data set), ICL's UF-P contexts run to ~480 tokens, and DPL
is BTL with a std head (it cannot use the user either)."""


def benchmark_config(profile_name: str, **changes) -> BenchmarkConfig:
    """The benchmark at a profile's scale (`plus.config.PROFILES`): its models and sizes, the learning rates
    a model of that size needs in a short run, then ``changes``.

    - smoke: tiny models, 8 training records, 4 per split (the table's splits), one epoch, one seed: checks
      that everything runs;
    - cpu: MiniLM reward model (mean pooling, top 4 of 6 blocks trained, lr 3e-4), SmolLM2 summaries, sized
      for a 2-core laptop: 512 training records, 400 per held-out split (>= 200 contested pairs on Pets), only
      the paper table's splits (``test``, ``test_ood``), 8 epochs (256 steps) for the text methods, 30 for
      vpl/pal at lr 1e-3, on Pets-OOD and UF-P-4 (UF-P-2, the easier two-user population, is left out for
      time: its runs take as long as UF-P-4's), less the runs of `CPU_SKIP`. Fewer trainable blocks or epochs
      leave Oracle near BTL on Pets (measured: 2 blocks x 6 epochs 74.5%, head only 67.0%; 4 blocks x 8 epochs
      98.3%): its two descriptions differ only in word order, which the mean-pooled bottom blocks do not
      separate. At lr 1e-3 one seed of three stayed at 74.5% (Oracle on Pets `test`: 100, 100, 74.5%); at
      3e-4 all three learn (98.5, 100, 100%; `results/cpu/probes/03_reward_models-lr`). ICL at 256 records x 8
      epochs reads too few distinct contexts (77% of contested Pets pairs, short of the "far above BTL" bar);
      512 records x 4 epochs lift it to 89% but leave Oracle at 82% in one seed of three; 512 x 8 gives both
      (ICL 91.5%, Oracle 100% in every seed; `results/cpu/probes/03_reward_models-data`), at twice the compute;
    - gpu: the paper's models and reward-model learning rate (Qwen2.5-0.5B-Instruct RM, 9e-6), 1 epoch."""
    from plus.config import get_profile

    profile = get_profile(profile_name)
    reward_model = RewardModelConfig(backbone=profile.reward_model, max_length=profile.max_length)
    train = TrainConfig(batch_size=profile.batch_size, progress_bar=False)
    sizes = {
        "num_train": profile.num_train_examples,
        "num_test": profile.num_test_examples,
        "seeds": tuple(range(profile.num_seeds)),
    }
    embedding_epochs = 10
    if profile.name == "smoke":
        train = replace(train, learning_rate=1e-3, head_learning_rate=1e-3)
        # Byte-level tokens make UF-P-like inputs ~600 long: cap them (cut responses are counted and logged).
        reward_model = replace(reward_model, max_length=256)
        sizes = {"num_train": 8, "num_test": 4, "seeds": (0,), "splits": ("test", "test_ood")}
        embedding_epochs = 2
    elif profile.name == "cpu":
        reward_model = replace(reward_model, num_trainable_layers=4)
        train = replace(train, learning_rate=3e-4, head_learning_rate=3e-4, num_epochs=8)
        sizes = {"num_train": 512, "num_test": 400, "splits": ("test", "test_ood")}
        sizes["datasets"] = ("pets-ood", "uf-p-4-synthetic")  # UF-P-2 left out for time (see the docstring)
        embedding_epochs = 30
    # VPL's posterior collapses to the prior (contested pairs at 50%) at 3e-3 on the toy users; 1e-3 learns.
    embedding_train = replace(train, learning_rate=1e-3, head_learning_rate=1e-3, num_epochs=embedding_epochs)
    config = BenchmarkConfig(
        **sizes,
        reward_model=reward_model,
        train=train,
        embedding_train=embedding_train,
        embedding_model=profile.embedding_model,
        summarizer_model=profile.summarizer_model,
        max_summary_tokens=profile.max_summary_tokens,
    )
    config = replace(config, **changes)
    if profile.name == "cpu" and "skip" not in changes:  # those of CPU_SKIP that the chosen runs include
        config = replace(config, skip=tuple(entry for entry in CPU_SKIP if entry in config.grid))
    return config


def run_fingerprint(config: BenchmarkConfig, dataset: str, method: str, seed: int) -> str:
    """A hash of everything one run's result depends on: the config (less the lists of methods, data sets, seeds
    and skipped runs and the batch sizes of inference), the data set, the method (and its `revision`, when
    raised above 0) and the seed."""
    unrelated = ("methods", "datasets", "seeds", "skip", "eval_batch_size")
    shared = {k: v for k, v in asdict(config).items() if k not in unrelated}
    keys = {"config": shared, "dataset": dataset, "method": method, "seed": seed}
    revision = getattr(METHODS.get(method), "revision", 0)
    if revision:  # absent at 0: the stored runs of every unrevised method keep their fingerprints
        keys["revision"] = revision
    payload = json.dumps(keys, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def run_benchmark(config: BenchmarkConfig, output_dir: str | Path) -> dict:
    """Train and evaluate every method on every data set with every seed; write ``output_dir/results.json``.

    Per run, the training metrics go to ``output_dir/runs/<data set>/<method>/seed<k>/metrics.jsonl`` and its
    accuracies to ``result.json`` there (no final checkpoint: the table needs only the metrics). A run whose
    ``result.json`` carries the same `run_fingerprint` is read back, not retrained (``num_cached_runs`` counts
    them), so an interrupted benchmark resumes; a run killed mid-training resumes from its last epoch's
    checkpoint (`plus.train.train_reward_model`), and its ``seconds`` then count the resumed part only.
    plus-untrained summaries come from (and go to) the cache ``output_dir/summaries.jsonl``. The artifact holds
    the config, per-seed and aggregated accuracies per split, and seconds: per (data set, method) in this call,
    ``runs_total`` (the compute of every run, cached or not, as measured when it ran) and ``total`` (this call's
    wall time)."""
    from plus.baselines import plus_untrained_summaries
    from plus.data import build_dataset

    output_dir = Path(output_dir)
    began = time.perf_counter()
    embedder = None
    if {"vpl", "pal"} & set(config.methods):
        embedder = TextEmbedder(config.embedding_model)
    results: dict = {"config": asdict(config), "runs": {}, "aggregate": {}, "seconds": {"runs_total": 0.0}}
    results["num_cached_runs"] = 0
    num_runs = (len(config.datasets) * len(config.methods) - len(config.skip)) * len(config.seeds)
    bar = tqdm(total=num_runs, desc="benchmark runs")
    for dataset in config.datasets:
        records = build_dataset(dataset, config.data_seed, num_train=config.num_train, num_test=config.num_test)
        records = [record for record in records if record["split"] in ("train", *config.splits)]
        train_records = [record for record in records if record["split"] == "train"]
        cache = FrozenFeatureCache()  # shared by every text method and seed of this data set
        summaries = None
        if "plus-untrained" in config.methods and f"{dataset}:plus-untrained" not in config.skip:
            start = time.perf_counter()
            summaries = plus_untrained_summaries(
                records,
                config.summarizer_model,
                config.max_summary_tokens,
                output_dir / "summaries.jsonl",
                seed=config.data_seed,
                batch_size=config.summary_batch_size,
            )
            results["seconds"][f"{dataset}/summaries"] = time.perf_counter() - start
        for method_name in config.methods:
            if f"{dataset}:{method_name}" in config.skip:
                continue
            embedding = method_name in ("vpl", "pal")
            per_seed = []
            start = time.perf_counter()
            for seed in config.seeds:
                run = output_dir / "runs" / dataset / method_name / f"seed{seed}"
                fingerprint = run_fingerprint(config, dataset, method_name, seed)
                if (run / "result.json").exists() and read_json(run / "result.json")["fingerprint"] == fingerprint:
                    per_seed.append(read_json(run / "result.json")["metrics"])
                    results["num_cached_runs"] += 1
                    bar.update(1)
                    continue
                run_began = time.perf_counter()
                seed_everything(seed)
                method_config = BaselineConfig(
                    method=method_name,
                    reward_model=config.reward_model,
                    embedding_model=config.embedding_model,
                    kl_weight=KL_WEIGHTS.get(dataset, 1e-4),
                )
                method = build_method(method_config, embedder=embedder, summaries=summaries, seed=seed)
                model = getattr(method, "model", None)
                if config.frozen_cache and model is not None and model.frozen_cache_refusal() is None:
                    model.use_frozen_cache(cache)
                train_config = replace(config.embedding_train if embedding else config.train, seed=seed)
                per_epoch = math.ceil(len(train_records) / train_config.batch_size)  # a killed run resumes mid-run
                trained = train_reward_model(
                    method, train_records, train_config, run, save_checkpoint=False, checkpoint_every=per_epoch
                )
                metrics = evaluate_method(method, records, config.splits, config.eval_batch_size)
                metrics["train"] = {"final_loss": trained.metrics[-1]["losses/total"], "seconds": trained.seconds}
                if hasattr(method, "model"):
                    metrics["train"]["truncation"] = dict(method.model.truncation_counts)
                metrics["train"]["run_seconds"] = time.perf_counter() - run_began
                metrics["train"]["frozen_cache"] = {"hits": cache.hits, "misses": cache.misses, "inputs": len(cache)}
                write_json(run / "result.json", {"fingerprint": fingerprint, "metrics": metrics})
                per_seed.append(metrics)
                bar.update(1)
                logger.info("%s %s seed %d: %s", dataset, method_name, seed, metrics.get("test", {}))
            results["runs"].setdefault(dataset, {})[method_name] = per_seed
            results["aggregate"].setdefault(dataset, {})[method_name] = aggregate_over_seeds(
                [{k: v for k, v in m.items() if k != "train"} for m in per_seed]
            )
            results["seconds"][f"{dataset}/{method_name}"] = time.perf_counter() - start
            results["seconds"]["runs_total"] += sum(m["train"]["run_seconds"] for m in per_seed)
        ceiling = majority_accuracy(records, config.splits)
        if ceiling:
            results["aggregate"].setdefault(dataset, {})[MAJORITY] = aggregate_over_seeds([ceiling])
    bar.close()
    results["seconds"]["total"] = time.perf_counter() - began
    write_json(output_dir / "results.json", results)
    write_table(output_dir / "table.json", table_rows(results))
    return results


def format_interval(row: dict) -> str:
    """A ``table.json`` row's accuracy as "mean [low, high]" in %, one decimal."""
    return f"{100 * row['mean']:.1f} [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]"


def find_row(
    rows: Sequence[dict], dataset: str, split: str, subset: str, method: str, metric: str = "accuracy"
) -> dict | None:
    """The one ``table.json`` row of (data set, split, subset, method, metric), or None when it is absent."""
    keys = (dataset, split, subset, method, metric)
    for row in rows:
        if (row["dataset"], row["split"], row["subset"], row["method"], row["metric"]) == keys:
            return row
    return None


CEILING = 0.95
"""Accuracy that counts as "at the ceiling" (the Oracle sanity bar; the overview's ``ceiling`` claims)."""
CHANCE_BAND = 0.05
"""How far from 50% a mean may lie and still count as chance (BTL on contested pairs; in `sanity_bars`, how far
from the user-blind ceiling, which is 50% where the users split evenly)."""
FAR_ABOVE = 0.20
"""How far (accuracy) a method that reads the true user signal must clear BTL on contested pairs, lower bound
of its interval against the upper bound of BTL's, for the sanity bar "far above BTL"."""


def sanity_bars(rows: Sequence[dict], columns: dict[str, tuple[str, str]] = PAPER_COLUMNS):
    """The checks that must hold before the benchmark's comparison means anything, evaluated on ``table.json``
    rows (`table_rows`): a pandas DataFrame, one row per (bar, column), with the measured value, its 95%
    interval, the threshold and ``holds`` (True, False, or None when a run it needs is absent).

    - Oracle >= 95% on Pets ``test`` (all pairs): the reward model can read a user description at all;
    - Oracle clearly above BTL (all pairs; intervals disjoint) on every data set's ``test`` split (seen users);
    - BTL within 5 points of the user-blind ceiling on contested pairs (its mean against the ``majority`` row of
      `majority_accuracy`; 50% where the rows lack it): a user-blind model can do no better than follow the
      training users' majority, which is chance where they split evenly;
    - Oracle and ICL (they read the true signal on Pets) at least `FAR_ABOVE` above BTL on Pets contested
      pairs: the lower bound of their interval against the upper bound of BTL's."""
    import pandas as pd

    def bar(name: str, column: str, cell: dict | None, threshold: str, holds) -> dict:
        measured = None if cell is None else cell["mean"]
        interval = None if cell is None else (cell["ci_low"], cell["ci_high"])
        return {
            "bar": name,
            "column": column,
            "measured": measured,
            "95% interval": interval,
            "threshold": threshold,
            "holds": None if cell is None or holds is None else bool(holds),
        }

    out = []
    pets = columns.get("Pets")
    if pets:
        oracle = find_row(rows, *pets, "all", "oracle")
        out.append(bar("Oracle >= 95%", "Pets", oracle, f">= {CEILING}", oracle and oracle["mean"] >= CEILING))
    for column, (dataset, split) in columns.items():
        if split != "test":  # new users or shifted preferences: Oracle may not generalise, which is a finding
            continue
        oracle, btl = find_row(rows, dataset, split, "all", "oracle"), find_row(rows, dataset, split, "all", "btl")
        holds = None if btl is None or oracle is None else oracle["ci_low"] > btl["ci_high"]
        threshold = "lower bound > BTL's upper bound" + ("" if btl is None else f" ({btl['ci_high']:.3f})")
        out.append(bar("Oracle clearly above BTL", column, oracle if btl else None, threshold, holds))
    for column, (dataset, split) in columns.items():
        btl = find_row(rows, dataset, split, "contested", "btl")
        ceiling = find_row(rows, dataset, split, "contested", MAJORITY)
        level = 0.5 if ceiling is None else ceiling["mean"]
        near = btl and abs(btl["mean"] - level) <= CHANCE_BAND
        threshold = f"{level - CHANCE_BAND:.2f}-{level + CHANCE_BAND:.2f}" + (
            "" if ceiling is None else f" (user-blind ceiling {level:.3f})"
        )
        out.append(bar("BTL at the user-blind ceiling on contested", column, btl, threshold, near))
    if pets:
        btl = find_row(rows, *pets, "contested", "btl")
        for method in ("oracle", "icl"):
            cell = find_row(rows, *pets, "contested", method)
            holds = None if btl is None or cell is None else cell["ci_low"] >= btl["ci_high"] + FAR_ABOVE
            threshold = f"lower bound >= BTL's upper bound + {FAR_ABOVE:.2f}"
            out.append(
                bar(
                    f"{method_label(method)} far above BTL on contested",
                    "Pets",
                    cell if btl else None,
                    threshold,
                    holds,
                )
            )
    return pd.DataFrame(out)


def interval_table(
    rows: Sequence[dict],
    subset: str = "contested",
    columns: dict[str, tuple[str, str]] = PAPER_COLUMNS,
    labels: dict[str, str] | None = None,
):
    """A pandas DataFrame of ``table.json`` rows laid out like the paper's table: one row per method (named by
    ``labels``, else `paper_label`), per column ``ours`` as "mean [low, high]" (%, 95% interval) and ``reported``
    (%, the paper's, on the contested subset only: the row's own, else `REPORTED_PLUS_TABLE`'s; see
    `table_rows`). Empty strings where a run is absent."""
    import pandas as pd

    methods = list(dict.fromkeys(row["method"] for row in rows))
    table = {}
    for method in methods:
        row = {}
        for column, (dataset, split) in columns.items():
            cell = find_row(rows, dataset, split, subset, method)
            row[(column, "ours")] = "" if cell is None else format_interval(cell)
            reported = REPORTED_PLUS_TABLE.get(paper_label(method) or "", {}).get(column)
            if cell is not None and cell.get("reported") is not None:
                reported = 100 * cell["reported"]
            row[(column, "reported")] = "" if reported is None or subset != "contested" else f"{reported:.1f}"
        table[(labels or {}).get(method) or paper_label(method) or method] = row
    frame = pd.DataFrame(table).T
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame
