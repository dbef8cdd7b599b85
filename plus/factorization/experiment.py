"""The Attributes experiment of PReF: data layer records -> frozen response features -> the new-user protocol for
every method, the ablations and the best-of-N win rate -> JSON artifacts for the notebook.

Adapter (what this module adds on top of `plus.data`):

- the training population is the ``train`` split (seen users' answers) as the pair x user matrix of
  `plus.data.label_matrix` (first response = the lexicographically smaller text);
- a new user (split ``test_new_users``) is asked questions from the whole shared pool of pairs on train prompts
  (every ``pair_id`` the records use there), minus the user's held-out pairs and the pairs it is indifferent to,
  answered by its ground truth; passive methods get the user's own ``answer`` records first, in a seeded random
  order (so the first ``num_answers`` answers are the data layer's), active PReF chooses from the whole pool;
- its held-out pairs are its ``heldout`` records; best-of-N draws ``num_best_of_n`` candidates of the response
  bank per prompt, the default response being the first draw (one sample of the unpersonalised policy), and
  judges them with the user's ground-truth reward (`plus.data.ground_truth_reward`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import torch

from plus.config import Profile, check_number
from plus.data import build_pref_attributes, build_response_bank, ground_truth_reward, label_matrix, profile_sizes
from plus.factorization.core import PrefConfig
from plus.factorization.protocol import (
    NewUser,
    NewUserMethod,
    PalNewUser,
    PerUserBT,
    PrefNewUser,
    ResponseBank,
    SingleBT,
    TrainingPopulation,
    VplNewUser,
    evaluate_new_users,
    summarize,
)
from plus.models import load_backbone

logger = logging.getLogger(__name__)

REPORTED_ATTRIBUTES: dict[str, dict] = {
    "auc": {
        "PReF (active)": {2: 0.71, 10: 0.83, 40: 0.875},
        "Single BT": {0: 0.645, 40: 0.645},
        "BT per user": {10: 0.655},
        "PReF (random)": {40: 0.82},
    },
    "win_rate": {"PReF (active)": {5: 0.68, 10: 0.705, 40: 0.81}, "Single BT": {0: 0.548, 40: 0.548}},
    "ablation_auc": {"full": 0.905, "no L2": 0.81, "no SVD": 0.75},
}
"""PReF's reported Attributes numbers, read off the paper's figures (approximate; see REFERENCE.md section 3).
Keys of the inner dicts are numbers of answers; the single BT model ignores answers, so its line is flat."""


@dataclass(frozen=True)
class PrefExperimentConfig:
    """Everything the Attributes experiment varies; `pref_experiment_config` sizes it for a profile."""

    pref: PrefConfig = field(default_factory=PrefConfig)
    """PReF's own hyper-parameters (the paper's defaults)."""
    embedding_model: str = "all-minilm-l6-v2"
    """Frozen backbone whose mean-pooled state of (prompt, response) is phi's input."""
    max_length: int = 256
    """Token cap of the embedded (prompt, response) texts."""
    data_sizes: tuple[tuple[str, int], ...] = (("num_heldout", 20),)
    """Keyword sizes for `plus.data.build_pref_attributes` (the paper's 40 answers per user are its default)."""
    answer_counts: tuple[int, ...] = (0, 1, 2, 3, 5, 10, 15, 20, 30, 40)
    """Numbers of a new user's answers at which every method is evaluated."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of the data, the fits and the question orders."""
    num_best_of_n: int = 8
    """N candidates per prompt for best-of-N; the first is the default response."""
    ablation_factors: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    """Values of J in the ablation (active PReF); the full method's J is not refitted."""
    ablation_counts: tuple[int, ...] = (0, 2, 5, 10, 20, 40)
    """Numbers of answers at which the ablations are evaluated."""
    num_bt_epochs: int = 300
    """Full-batch epochs of the single BT model."""
    num_pal_epochs: int = 300
    """Full-batch epochs of PAL-B on the training users."""
    num_vpl_steps: int = 400
    """Optimiser steps of VPL on the training users."""
    num_threads: int = 1
    """Torch threads for the (many, small) fits; embedding uses the default."""

    def __post_init__(self) -> None:
        if not self.answer_counts or min(self.answer_counts) < 0:
            raise ValueError(f"answer_counts must be non-negative and non-empty, got {self.answer_counts}")
        if not self.seeds:
            raise ValueError("seeds must be non-empty")
        check_number(self, "num_best_of_n", 2, integer=True)
        if not self.ablation_factors or min(self.ablation_factors) < 1:
            raise ValueError(f"ablation_factors must be positive, got {self.ablation_factors}")
        for name in ("max_length", "num_bt_epochs", "num_pal_epochs", "num_vpl_steps", "num_threads"):
            check_number(self, name, 1, integer=True)


def pref_experiment_config(
    profile: Profile, num_seeds: int = 0, num_factors: int = 5, **overrides
) -> PrefExperimentConfig:
    """The experiment sized for ``profile``: paper sizes at cpu/gpu; at smoke a tiny population and short fits.
    ``num_seeds`` = 0 takes the profile's; ``num_factors`` is PReF's J; ``overrides`` replace config fields."""
    seeds = tuple(range(num_seeds or profile.num_seeds))
    sizes = profile_sizes("attributes", profile.num_train_examples, profile.num_test_examples)
    if profile.name == "smoke":
        config = PrefExperimentConfig(
            pref=PrefConfig(num_epochs=20, num_warm_start_epochs=10),
            embedding_model=profile.embedding_model,
            max_length=64,
            data_sizes=tuple(sorted({**sizes, "num_candidates": 8}.items())),
            answer_counts=(0, 2, 5),
            seeds=seeds,
            ablation_factors=(1, 2),
            ablation_counts=(0, 5),
            num_bt_epochs=10,
            num_pal_epochs=10,
            num_vpl_steps=5,
        )
    else:
        config = PrefExperimentConfig(
            embedding_model=profile.embedding_model,
            data_sizes=(("num_heldout", 20), *sorted(sizes.items())),
            seeds=seeds,
        )
    config = replace(config, pref=replace(config.pref, num_factors=num_factors))
    return replace(config, **overrides)


@contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Run a block with ``num_threads`` torch threads: small tensor ops are several times faster on one thread of a
    shared machine than on two."""
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def embed_texts(texts: list[str], model_name: str, batch_size: int = 64, max_length: int = 256) -> torch.Tensor:
    """Mean-pooled last hidden states (N, H) of a frozen backbone (sentence-transformers pooling for MiniLM)."""
    model, tokenizer = load_backbone(model_name, device="cpu", dtype=torch.float32)
    model.eval()
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"][..., None].float()  # (B, T, 1)
        out.append((hidden * mask).sum(1) / mask.sum(1))  # (B, H)
    return torch.cat(out)


def _standardise(features: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per feature over the bank (unsupervised; it only conditions the optimisation)."""
    return (features - features.mean(0)) / features.std(0).clamp_min(1e-6)


@dataclass
class AttributesProblem:
    """One seed's Attributes population in the protocol's tensors."""

    bank: ResponseBank
    population: TrainingPopulation
    new_users: list[NewUser]
    train_user_ids: list[str]
    texts: list[str]  # response texts, rows of bank.features


def _embed_cached(texts: list[str], config: PrefExperimentConfig, cache: dict[str, torch.Tensor]) -> torch.Tensor:
    """Embeddings (N, H) of texts, computing only those not in ``cache`` (which is updated)."""
    missing = sorted({t for t in texts if t not in cache})
    if missing:
        cache.update(
            zip(missing, embed_texts(missing, config.embedding_model, max_length=config.max_length), strict=True)
        )
    return torch.stack([cache[t] for t in texts])


def build_attributes_problem(
    config: PrefExperimentConfig, seed: int, cache: dict[str, torch.Tensor] | None = None
) -> AttributesProblem:
    """Records of `plus.data.build_pref_attributes` and the response bank -> features, training matrix, new users.
    ``cache`` maps texts to raw embeddings and is shared across seeds (banks of different seeds share texts)."""
    cache = {} if cache is None else cache
    sizes = dict(config.data_sizes)
    records = build_pref_attributes(seed=seed, **sizes)
    bank = build_response_bank(seed, sizes.get("num_candidates", 24))
    responses = [r for prompt_id in sorted(bank.responses) for r in bank.responses[prompt_id]]
    texts = [r.text for r in responses]
    index = {text: i for i, text in enumerate(texts)}
    by_pair_id = {f"{r.prompt_id}:{r.index}": i for i, r in enumerate(responses)}
    prompts = [bank.prompts[r.prompt_id] for r in responses]
    # phi's input: the prompt and the response together, as a reward model reads them.
    features = _standardise(_embed_cached([f"{p}\n\n{t}" for p, t in zip(prompts, texts, strict=True)], config, cache))
    unique_prompts = sorted(set(prompts))
    prompt_embeddings = dict(
        zip(unique_prompts, _standardise(_embed_cached(unique_prompts, config, cache)), strict=True)
    )
    response_bank = ResponseBank(
        features=features, prompt_features=torch.stack([prompt_embeddings[p] for p in prompts])
    )

    def canonical(pair_id: str) -> tuple[int, int]:
        """Response indices of a pair, the lexicographically smaller text first (label_matrix's convention)."""
        prompt_id, ends = pair_id.split(":")
        a, b = (by_pair_id[f"{prompt_id}:{k}"] for k in ends.split("-"))
        return (a, b) if texts[a] < texts[b] else (b, a)

    train = [r for r in records if r["split"] == "train"]
    pair_ids, user_ids, matrix = label_matrix(train)
    population = TrainingPopulation(
        pairs=torch.tensor([canonical(p) for p in pair_ids]), labels=torch.tensor(matrix, dtype=torch.float32)
    )
    pool = sorted({r["pair_id"] for r in records if r["split"] in ("train", "test", "test_new_users")})
    new_records: dict[str, list[dict]] = {}
    for r in records:
        if r["split"] == "test_new_users":
            new_records.setdefault(r["user_id"], []).append(r)
    generator = torch.Generator().manual_seed(seed)
    new_users = []
    for user_id, user_records in sorted(new_records.items()):
        profile = user_records[0]["ground_truth"]["profile"]
        reward = torch.tensor([ground_truth_reward(profile, r.scores) for r in responses])  # (R,)

        def labelled(ids: list[str], reward=reward) -> tuple[torch.Tensor, torch.Tensor]:
            pairs = torch.tensor([canonical(p) for p in ids]).view(-1, 2)
            return pairs, (reward[pairs[:, 0]] > reward[pairs[:, 1]]).float()

        answers = [r["pair_id"] for r in user_records if r["role"] == "answer"]
        heldout = [r["pair_id"] for r in user_records if r["role"] == "heldout"]
        extra = [p for p in pool if p not in set(answers) | set(heldout)]
        extra_pairs = torch.tensor([canonical(p) for p in extra]).view(-1, 2)
        extra = [p for p, (a, b) in zip(extra, extra_pairs.tolist(), strict=True) if reward[a] != reward[b]]
        question_pairs, question_labels = labelled(answers + extra)
        test_pairs, test_labels = labelled(heldout)
        for r in user_records:  # the data layer's orientation and ours must agree
            a, b = index[r["eval_chosen"]], index[r["eval_rejected"]]
            if not reward[a] > reward[b]:
                raise ValueError(f"Record of user {user_id!r}, pair {r['pair_id']!r}: chosen is not the better one")
        candidates = torch.stack(
            [
                torch.tensor([index[r.text] for r in bank.responses[p]])[
                    torch.randperm(len(bank.responses[p]), generator=generator)[: config.num_best_of_n]
                ]
                for p in sorted(bank.responses)
            ]
        )  # (B, N)
        new_users.append(
            NewUser(
                user_id=user_id,
                question_pairs=question_pairs,
                question_labels=question_labels,
                test_pairs=test_pairs,
                test_labels=test_labels,
                candidates=candidates,
                candidate_rewards=reward[candidates],
                default=torch.zeros(len(candidates), dtype=torch.long),
                num_given=len(answers),
            )
        )
    return AttributesProblem(response_bank, population, new_users, user_ids, texts)


def default_methods(config: PrefExperimentConfig) -> list[NewUserMethod]:
    """The methods of the new-user comparison, in plotting order."""
    return [
        SingleBT(num_epochs=config.num_bt_epochs),
        PerUserBT(),
        VplNewUser(num_steps=config.num_vpl_steps, max_context=max(config.answer_counts)),
        PalNewUser(num_epochs=config.num_pal_epochs),
        PrefNewUser(config.pref, active=False),
        PrefNewUser(config.pref, active=True),
    ]


def ablation_methods(config: PrefExperimentConfig) -> list[PrefNewUser]:
    """Active PReF without the SVD warm start, without the L2 term, and with J in ``ablation_factors``."""
    methods = [
        PrefNewUser(config.pref, name="full"),
        PrefNewUser(replace(config.pref, use_svd=False), name="no SVD"),
        PrefNewUser(replace(config.pref, l2_weight=0.0), name="no L2"),
    ]
    methods += [
        PrefNewUser(replace(config.pref, num_factors=j), name=f"J={j}")
        for j in config.ablation_factors
        if j != config.pref.num_factors
    ]
    return methods


def ablation_table(result: dict) -> list[dict]:
    """Per-seed ablation means with a ``J`` column (the full method counts as its own J, the variants as theirs)."""
    full = result["config"]["pref"]["num_factors"]
    rows = seed_table(result["ablation_rows"])
    for row in rows:
        name = row["method"]
        row["J"] = int(name[2:]) if name.startswith("J=") else full
    return rows


def run_attributes_experiment(config: PrefExperimentConfig) -> dict:
    """Every seed: build the problem, fit and evaluate the methods and the ablations on the new users.

    Returns ``{"rows": [...], "ablation_rows": [...], "fit_history": {...}, "timing": {...}, "config": ...}``; a row
    is one (seed, method, user, number of answers) with ``auc``, ``accuracy`` and ``win_rate``."""
    rows, ablation_rows, histories, timing = [], [], {}, {}
    start_all, cache = time.perf_counter(), {}
    for seed in config.seeds:
        start = time.perf_counter()
        problem = build_attributes_problem(config, seed, cache)
        timing[f"seed{seed}/features_s"] = time.perf_counter() - start
        with torch_threads(config.num_threads):
            for group, methods, out, counts in (
                ("methods", default_methods(config), rows, config.answer_counts),
                ("ablations", ablation_methods(config), ablation_rows, config.ablation_counts),
            ):
                start = time.perf_counter()
                for method in methods:
                    method.fit(problem.bank, problem.population, seed)
                    if isinstance(method, PrefNewUser):
                        histories[f"seed{seed}/{group}/{method.name}"] = method.history
                timing[f"seed{seed}/{group}/fit_s"] = time.perf_counter() - start
                start = time.perf_counter()
                for row in evaluate_new_users(methods, problem.bank, problem.new_users, list(counts), seed):
                    out.append({"seed": seed, **row})
                timing[f"seed{seed}/{group}/evaluate_s"] = time.perf_counter() - start
        logger.info(
            "seed %d done: %s", seed, {k: round(v, 1) for k, v in timing.items() if k.startswith(f"seed{seed}")}
        )
    timing["total_s"] = time.perf_counter() - start_all
    return {
        "rows": rows,
        "ablation_rows": ablation_rows,
        "fit_history": histories,
        "timing": timing,
        "config": asdict(config),
        "num_train_users": problem.population.labels.shape[1],
        "num_new_users": len(problem.new_users),
        "num_pairs": problem.population.labels.shape[0],
        "observed_share": float((~problem.population.labels.isnan()).float().mean()),
    }


def seed_table(rows: list[dict], keys: tuple[str, ...] = ("method", "num_answers")) -> list[dict]:
    """Per-seed means over users (one row per seed and ``keys``): what seed-spread plots take."""
    return summarize(rows, ("seed", *keys))


def spread_at(rows: list[dict], method: str, num_answers: int, metric: str = "auc") -> tuple[float, float]:
    """Mean and standard deviation over seeds of ``metric`` for ``method`` after ``num_answers`` answers."""
    values = [r[metric] for r in seed_table(rows) if r["method"] == method and r["num_answers"] == num_answers]
    if not values:
        raise KeyError(f"No rows for method {method!r} at {num_answers} answers")
    tensor = torch.tensor(values, dtype=torch.float64)
    return tensor.mean().item(), (tensor.std().item() if len(values) > 1 else 0.0)


METHOD_KEYS: dict[str, str] = {
    "Single BT": "btl",
    "BT per user": "bt-per-user",
    "VPL": "vpl",
    "PAL-B": "pal",
    "PReF (random)": "pref-random",
    "PReF (active)": "pref-active",
}
"""Method label in this experiment -> the stable key of ``table.json`` (``../shared/RESULTS.md``)."""


def pref_table_rows(result: dict, metrics: tuple[str, ...] = ("auc", "win_rate", "accuracy")) -> list[dict]:
    """The rows of ``table.json`` from `run_attributes_experiment`: one per method, metric and number of answers
    k (metric ``<name>@k``), data set ``attributes``, split ``test_new_users``, subset ``all``. ``mean`` is over
    seeds and new users (NaN values left out; a cell with a seed of no values is left out); the 95% interval
    is `plus.evaluation.bootstrap_interval` over seeds and users; ``n`` counts new users of the first seed;
    ``reported`` is the paper's value read off its figures (`REPORTED_ATTRIBUTES`), where it gives one."""
    from plus.evaluation import bootstrap_interval

    seeds = sorted({row["seed"] for row in result["rows"]})
    rows = []
    for label, key in METHOD_KEYS.items():
        for k in result["config"]["answer_counts"]:
            cells = [r for r in result["rows"] if r["method"] == label and r["num_answers"] == k]
            if not cells:
                continue
            for metric in metrics:
                table = [  # per seed, its users' values; NaN (e.g. AUC of a user with one class) left out
                    [r[metric] for r in sorted(cells, key=lambda r: r["user_id"]) if r["seed"] == seed]
                    for seed in seeds
                ]
                table = [[v for v in per_seed if v == v] for per_seed in table]
                if not all(table):
                    continue
                low, high = bootstrap_interval(table)
                values = [value for per_seed in table for value in per_seed]
                rows.append(
                    {
                        "dataset": "attributes",
                        "split": "test_new_users",
                        "subset": "all",
                        "method": key,
                        "metric": f"{metric}@{k}",
                        "mean": sum(values) / len(values),
                        "ci_low": low,
                        "ci_high": high,
                        "n": len(table[0]),
                        "seeds": seeds,
                        "reported": REPORTED_ATTRIBUTES.get(metric, {}).get(label, {}).get(k),
                    }
                )
    return rows


def closing_note(result: dict, wall_time_s: float, profile: str) -> str:
    """The notebook's closing note (markdown): AUC at 10 answers, the active-vs-random gap, the wall time."""
    counts = result["config"]["answer_counts"]
    at = 10 if 10 in counts else max(counts)
    active, active_sd = spread_at(result["rows"], "PReF (active)", at)
    random_, random_sd = spread_at(result["rows"], "PReF (random)", at)
    bt, bt_sd = spread_at(result["rows"], "Single BT", at)
    positive = [n for n in counts if n > 0]
    gaps = [
        spread_at(result["rows"], "PReF (active)", n)[0] - spread_at(result["rows"], "PReF (random)", n)[0]
        for n in positive
    ]
    reported = REPORTED_ATTRIBUTES["auc"]["PReF (active)"].get(at)
    num_seeds = len(result["config"]["seeds"])
    lines = [
        f"- **AUC at {at} answers** (PReF, active questions): {active:.3f} ± {active_sd:.3f} over {num_seeds} seeds"
        + (f"; the paper reports about {reported} on Attributes." if reported is not None else "."),
        f"- Random questions: {random_:.3f} ± {random_sd:.3f}; single BT model: {bt:.3f} ± {bt_sd:.3f}.",
        f"- **Active minus random** AUC: {gaps[positive.index(at)] if at in positive else float('nan'):+.3f} at {at} "
        f"answers; mean over 1-{max(counts)} answers {sum(gaps) / len(gaps):+.3f} (largest {max(gaps):+.3f}, "
        f"smallest {min(gaps):+.3f}).",
        f"- **Wall time** of this notebook at the `{profile}` profile: {wall_time_s / 60:.1f} min "
        f"({result['timing'].get('total_s', float('nan')):.0f} s in the experiment).",
    ]
    return "\n".join(lines)
