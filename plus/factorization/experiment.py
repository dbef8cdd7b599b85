"""The PReF experiment on a shared-pool population (Attributes or Archetypes, `plus.data.PREF_POPULATIONS`): data
layer records -> frozen response features -> the new-user protocol for every method, the ablations, the
question diagnostics, the scaling study and the best-of-N win rate -> JSON artifacts for the notebook.

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
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial

import torch

from plus.config import Profile, check_number
from plus.data import (
    PREF_POPULATIONS,
    build_dataset,
    build_response_bank,
    ground_truth_reward,
    label_matrix,
    profile_sizes,
)
from plus.factorization.core import PrefConfig, information_matrix
from plus.factorization.finetune import EncoderStates, FinetuneConfig, FinetunedPref
from plus.factorization.protocol import (
    FixedRewards,
    NewUser,
    NewUserMethod,
    PalNewUser,
    PerUserBT,
    PrefNewUser,
    ResponseBank,
    SingleBT,
    TrainingPopulation,
    TruePhiPref,
    VplNewUser,
    answer_order,
    evaluate_new_users,
    pair_metrics,
    question_order,
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
    dataset: str = "attributes"
    """The population (`plus.data.PREF_POPULATIONS`): ``attributes`` (PReF's 84 two-pole users) or ``archetypes``
    (84 mixtures of three latent archetypes)."""
    scaling_users: tuple[int, ...] = (8, 16, 32, 64)
    """Numbers of training users in the scaling study (capped at the population's)."""
    scaling_answers: tuple[int, ...] = (5, 10, 20, 40)
    """Labelled pairs per training user in the scaling study (capped at those each answered)."""
    scaling_at: int = 10
    """The new user's number of answers at which the scaling study is read."""
    finetune: FinetuneConfig | None = field(default_factory=FinetuneConfig)
    """Fine-tune phi's top encoder blocks after the frozen-head fit (an ablation row); None: skip it."""

    def __post_init__(self) -> None:
        if self.dataset not in PREF_POPULATIONS:
            raise ValueError(f"PrefExperimentConfig.dataset must be one of {PREF_POPULATIONS}, got {self.dataset!r}")
        for name in ("scaling_users", "scaling_answers"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                raise ValueError(f"PrefExperimentConfig.{name} must be positive and non-empty, got {values}")
        check_number(self, "scaling_at", 0, integer=True)
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


def _standardise(features: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """Zero mean, unit variance per feature over the bank (unsupervised; it only conditions the optimisation);
    with ``like``, on the scale of those features instead (new texts scored by a fit on the bank)."""
    like = features if like is None else like
    return (features - like.mean(0)) / like.std(0).clamp_min(1e-6)


@dataclass
class AttributesProblem:
    """One seed's population (Attributes or Archetypes) in the protocol's tensors."""

    bank: ResponseBank
    population: TrainingPopulation
    new_users: list[NewUser]
    train_user_ids: list[str]
    texts: list[str]  # response texts, rows of bank.features
    inputs: list[str]  # phi's input texts (prompt and response), rows of bank.features
    mean_train_reward: torch.Tensor  # (R,) the training users' mean ground-truth reward of each response
    true_features: torch.Tensor  # (R, K) attribute scores projected on the span of all users' profiles (rank K)
    raw_features: torch.Tensor | None = None  # (R, H) bank.features before standardising (new texts use its scale)
    new_user_truth: dict[str, dict] = field(default_factory=dict)  # user id -> ground truth (profile, description)
    attribute_scores: torch.Tensor | None = None  # (R, 7) each response's known scores on `ATTRIBUTES`


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
    records = build_dataset(config.dataset, seed=seed, **sizes)
    bank = build_response_bank(seed, sizes.get("num_candidates", 24))
    responses = [r for prompt_id in sorted(bank.responses) for r in bank.responses[prompt_id]]
    texts = [r.text for r in responses]
    index = {text: i for i, text in enumerate(texts)}
    by_pair_id = {f"{r.prompt_id}:{r.index}": i for i, r in enumerate(responses)}
    prompts = [bank.prompts[r.prompt_id] for r in responses]
    # phi's input: the prompt and the response together, as a reward model reads them.
    inputs = [f"{p}\n\n{t}" for p, t in zip(prompts, texts, strict=True)]
    raw_features = _embed_cached(inputs, config, cache)
    features = _standardise(raw_features)
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
    train_profiles = {r["user_id"]: r["ground_truth"]["profile"] for r in train}
    # The true base rewards: scores (R, 7) on an orthonormal basis of the span of every user's profile.
    from plus.data import ATTRIBUTES

    all_profiles = {r["user_id"]: r["ground_truth"]["profile"] for r in records}
    weights = torch.tensor([[p[a] for a in ATTRIBUTES] for p in all_profiles.values()], dtype=torch.float64)
    _, singular, basis = torch.linalg.svd(weights, full_matrices=False)
    rank = int((singular > 1e-6 * singular[0]).sum())
    scores = torch.tensor([[r.scores[a] for a in ATTRIBUTES] for r in responses], dtype=torch.float64)
    true_features = _standardise((scores @ basis[:rank].T).float())
    mean_train_reward = torch.tensor(
        [sum(ground_truth_reward(p, r.scores) for p in train_profiles.values()) for r in responses]
    ) / len(train_profiles)
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
                rewards=reward,
            )
        )
    return AttributesProblem(
        response_bank, population, new_users, user_ids, texts, inputs, mean_train_reward, true_features,
        raw_features, {user_id: rs[0]["ground_truth"] for user_id, rs in new_records.items()}, scores.float(),
    )  # fmt: skip


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


FINETUNED = "top block fine-tuned"
"""The ablation row whose phi has its encoder's top blocks fine-tuned (`plus.factorization.finetune`)."""


TRUE_PHI = "true phi"
"""The ablation row of PReF on the true base rewards (`TruePhiPref`), at their rank."""


def ablation_methods(
    config: PrefExperimentConfig,
    encoder: EncoderStates | None = None,
    inputs: list[str] | None = None,
    true_features: torch.Tensor | None = None,
) -> list[PrefNewUser]:
    """Active PReF without the SVD warm start, without the L2 term, with J in ``ablation_factors``, (given the
    ``encoder`` states of phi's ``inputs`` and ``config.finetune``) with the encoder's top blocks fine-tuned, and
    (given ``true_features``, R x K) on the true base rewards with J = K."""
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
    if config.finetune is not None and encoder is not None:
        methods.append(
            FinetunedPref(config.pref, name=FINETUNED, encoder=encoder, texts=inputs, finetune=config.finetune)
        )
    if true_features is not None:
        pref = replace(config.pref, num_factors=true_features.shape[1])
        methods.append(TruePhiPref(pref, name=TRUE_PHI, features=true_features))
    return methods


def ablation_table(result: dict) -> list[dict]:
    """Per-seed ablation means with a ``J`` column (the full method counts as its own J, the variants as theirs)."""
    full = result["config"]["pref"]["num_factors"]
    rows = seed_table(result["ablation_rows"])
    for row in rows:
        name = row["method"]
        row["J"] = int(name[2:]) if name.startswith("J=") else full
    return rows


MEAN_USER = "mean training user (truth)"
"""The reference row that ranks every response by the training users' mean ground-truth reward."""


def question_information(
    methods: list[PrefNewUser], problem: AttributesProblem, counts: list[int], seed: int
) -> list[dict]:
    """For fitted PReF ``methods`` (active and random), each new user and n in ``counts``: the log-determinant of
    the information matrix of the n questions asked (at the lambda fitted from them, `information_matrix`), the
    quantity the active criterion greedily raises, and ``asked_margin``: the median true reward margin of the
    asked pairs over the median of the user's whole pool (below 1: nearer to ties than a random question). One
    more row per user, ``num_answers`` = -1: the AUC of the lambda fitted from the user's whole question pool
    (what any choice of questions converges to)."""
    rows = []
    for position, user in enumerate(problem.new_users):
        order = question_order(user, seed, position)
        for method in methods:
            for n, answered in answer_order(method, problem.bank, user, max(counts), order):
                if n not in counts:
                    continue
                pairs, labels = user.question_pairs[answered], user.question_labels[answered]
                lam = method.user_weights(pairs, labels)
                diffs = method.phi[pairs[:, 0]] - method.phi[pairs[:, 1]]
                sigma = information_matrix(diffs.double(), lam.double(), method.config.prior_precision)
                row = {"seed": seed, "method": method.name, "user_id": user.user_id, "num_answers": n,
                       "log_det": float(torch.linalg.slogdet(sigma)[1])}  # fmt: skip
                if user.rewards is not None and n > 0:  # how close to a tie the asked pairs are, for this user
                    margin = (user.rewards[user.question_pairs[:, 0]] - user.rewards[user.question_pairs[:, 1]]).abs()
                    row["asked_margin"] = float(margin[answered].median() / margin.median())
                rows.append(row)
        pool = methods[0].user_rewards(problem.bank, user.question_pairs, user.question_labels)
        metrics = pair_metrics(pool[user.test_pairs[:, 0]] - pool[user.test_pairs[:, 1]], user.test_labels)
        rows.append({"seed": seed, "method": "whole pool", "user_id": user.user_id, "num_answers": -1, **metrics})
    return rows


def population_subset(labels: torch.Tensor, num_users: int, per_user: int, seed: int) -> torch.Tensor:
    """The label matrix (P, num_users) of the first ``num_users`` users of a seeded order, each keeping the first
    ``per_user`` of its labelled pairs in a seeded order (all of them when it has fewer). For one ``seed`` the
    subsets are nested: more users or more answers only add entries."""
    generator = torch.Generator().manual_seed(seed)
    users = torch.randperm(labels.shape[1], generator=generator)[:num_users]
    ranks = torch.rand(labels.shape, generator=generator).masked_fill(labels.isnan(), float("inf"))
    ranks = ranks.argsort(0).argsort(0)  # (P, U): a labelled entry's position in its user's order
    return labels.masked_fill(ranks >= per_user, float("nan"))[:, users]


def scaling_rows(config: PrefExperimentConfig, problem: AttributesProblem, seed: int) -> list[dict]:
    """Active PReF refitted on subsets of the training population: the first ``u`` users of a seeded order for u
    in ``config.scaling_users`` and, for each, ``m`` of each user's labelled pairs (seeded) for m in
    ``config.scaling_answers``; each fit is read on the new users after ``config.scaling_at`` answers."""
    labels, pairs = problem.population.labels, problem.population.pairs
    rows = []
    for num_users in sorted({min(u, labels.shape[1]) for u in config.scaling_users}):
        for per_user in sorted(config.scaling_answers):
            subset = population_subset(labels, num_users, per_user, seed)
            method = PrefNewUser(config.pref, active=True)
            method.fit(problem.bank, TrainingPopulation(pairs=pairs, labels=subset), seed)
            for row in evaluate_new_users([method], problem.bank, problem.new_users, [config.scaling_at], seed):
                rows.append({"seed": seed, "num_train_users": num_users, "answers_per_user": per_user, **row})
    return rows


def run_attributes_experiment(
    config: PrefExperimentConfig,
    cache: dict[str, torch.Tensor] | None = None,
    encoder: EncoderStates | None = None,
) -> dict:
    """Every seed: build the problem, fit and evaluate the methods and the ablations on the new users, then the
    reference, the question-information diagnostic and the scaling study. ``cache`` (text -> embedding) and
    ``encoder`` (`EncoderStates`, for the fine-tuned ablation; built here when None and ``config.finetune`` is
    set) may be shared between populations: they hold the same response bank.

    Returns ``{"rows", "ablation_rows", "reference_rows", "information_rows", "scaling_rows", "fit_history",
    "timing", "config", ...}``; a row is one (seed, method, user, number of answers) with ``auc``, ``accuracy``
    and ``win_rate``."""
    rows, ablation_rows, reference_rows, information_rows, scaling = [], [], [], [], []
    histories, timing = {}, {}
    start_all, cache = time.perf_counter(), ({} if cache is None else cache)
    if config.finetune is not None and encoder is None:
        encoder = EncoderStates(config.embedding_model, config.finetune.num_blocks, config.max_length)
    for seed in config.seeds:
        start = time.perf_counter()
        problem = build_attributes_problem(config, seed, cache)
        timing[f"seed{seed}/features_s"] = time.perf_counter() - start
        methods = default_methods(config)
        with torch_threads(config.num_threads):
            ablations = ablation_methods(config, encoder, problem.inputs, problem.true_features)
            for group, group_methods, out, counts in (
                ("methods", methods, rows, config.answer_counts),
                ("ablations", ablations, ablation_rows, config.ablation_counts),
            ):
                start = time.perf_counter()
                for method in group_methods:
                    method.fit(problem.bank, problem.population, seed)
                    if isinstance(method, PrefNewUser):
                        histories[f"seed{seed}/{group}/{method.name}"] = method.history
                timing[f"seed{seed}/{group}/fit_s"] = time.perf_counter() - start
                start = time.perf_counter()
                for row in evaluate_new_users(group_methods, problem.bank, problem.new_users, list(counts), seed):
                    out.append({"seed": seed, **row})
                timing[f"seed{seed}/{group}/evaluate_s"] = time.perf_counter() - start
            start = time.perf_counter()
            reference = FixedRewards(MEAN_USER, problem.mean_train_reward)
            for row in evaluate_new_users([reference], problem.bank, problem.new_users, [0], seed):
                reference_rows.append({"seed": seed, **row})
            pref = [m for m in methods if isinstance(m, PrefNewUser)]
            information_rows += question_information(pref, problem, list(config.answer_counts), seed)
            timing[f"seed{seed}/diagnostics_s"] = time.perf_counter() - start
            start = time.perf_counter()
            scaling += scaling_rows(config, problem, seed)
            timing[f"seed{seed}/scaling_s"] = time.perf_counter() - start
        logger.info(
            "seed %d done: %s", seed, {k: round(v, 1) for k, v in timing.items() if k.startswith(f"seed{seed}")}
        )
    timing["total_s"] = time.perf_counter() - start_all
    return {
        "dataset": config.dataset,
        "rows": rows,
        "ablation_rows": ablation_rows,
        "reference_rows": reference_rows,
        "information_rows": information_rows,
        "scaling_rows": scaling,
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


METHOD_KEYS: dict[str, str] = {
    "Single BT": "btl",
    "BT per user": "bt-per-user",
    "VPL": "vpl",
    "PAL-B": "pal",
    "PReF (random)": "pref-random",
    "PReF (active)": "pref-active",
}
"""Method label in this experiment -> the stable key of ``table.json`` (``../shared/RESULTS.md``)."""


def _cell(dataset: str, key: str, metric: str, table: list[list[float]], seeds: list[int], reported=None):
    """One ``table.json`` row from ``table[s]`` = seed s's values (one per new user), or None when a seed has none."""
    from plus.evaluation import bootstrap_interval

    table = [[v for v in per_seed if v == v] for per_seed in table]  # NaN (a user with one class) left out
    if not table or not all(table):
        return None
    low, high = bootstrap_interval(table)
    values = [value for per_seed in table for value in per_seed]
    return {
        "dataset": dataset,
        "split": "test_new_users",
        "subset": "all",
        "method": key,
        "metric": metric,
        "mean": sum(values) / len(values),
        "ci_low": low,
        "ci_high": high,
        "n": len(table[0]),
        "seeds": seeds,
        "reported": reported,
    }


def _per_seed(rows: list[dict], metric: str, seeds: list[int], **match) -> list[list[float]]:
    """``metric`` of the rows matching ``match``, per seed, in user order."""
    cells = sorted((r for r in rows if all(r[k] == v for k, v in match.items())), key=lambda r: r["user_id"])
    return [[r[metric] for r in cells if r["seed"] == seed] for seed in seeds]


def ablation_key(name: str) -> str:
    """The ``table.json`` key of an ablation row: ``no SVD`` -> ``pref-active-no-svd``, ``J=3`` ->
    ``pref-active-j3``."""
    return "pref-active-" + name.lower().replace("=", "").replace(" ", "-")


def pref_table_rows(result: dict, metrics: tuple[str, ...] = ("auc", "win_rate", "accuracy")) -> list[dict]:
    """The rows of ``table.json`` from `run_attributes_experiment`, data set ``result["dataset"]``, split
    ``test_new_users``, subset ``all``; metric ``<name>@k`` after k answers:

    - every method of `METHOD_KEYS`, metric and k (``reported``: the paper's value, `REPORTED_ATTRIBUTES`, on
      Attributes only);
    - ``pref-active-minus-random``: the per-user difference of active and random PReF's AUC, at every k > 0;
    - the ablations (`ablation_key`) and the mean-training-user reference (``mean-user-truth``, at 0 answers);
    - ``pref-whole-pool``, metric ``auc@pool``: lambda fitted from the user's whole question pool;
    - the scaling study: ``pref-active-users<u>-answers<m>``, AUC after ``scaling_at`` answers.

    ``mean`` is over seeds and new users (NaN values left out; a cell with a seed of no values is left out); the
    95% interval is `plus.evaluation.bootstrap_interval` over seeds and users; ``n`` counts the users of the first
    seed."""
    dataset = result.get("dataset", "attributes")
    seeds = sorted({row["seed"] for row in result["rows"]})
    reported = REPORTED_ATTRIBUTES if dataset == "attributes" else {}
    out = []
    for label, key in METHOD_KEYS.items():
        for k in result["config"]["answer_counts"]:
            for metric in metrics:
                table = _per_seed(result["rows"], metric, seeds, method=label, num_answers=k)
                paper = reported.get(metric, {}).get(label, {}).get(k)
                out.append(_cell(dataset, key, f"{metric}@{k}", table, seeds, paper))
    auc = {(r["method"], r["num_answers"], r["seed"], r["user_id"]): r["auc"] for r in result["rows"]}
    for k in result["config"]["answer_counts"]:
        gaps = [  # per seed and user: active minus random AUC
            [a - auc[("PReF (random)", k, *key[2:])] for key, a in sorted(auc.items())
             if key[:3] == ("PReF (active)", k, seed) and ("PReF (random)", k, *key[2:]) in auc]
            for seed in seeds
        ]  # fmt: skip
        out.append(_cell(dataset, "pref-active-minus-random", f"auc@{k}", gaps, seeds) if k > 0 else None)
    for name in sorted({r["method"] for r in result.get("ablation_rows", [])} - {"full"}):
        for k in result["config"]["ablation_counts"]:
            table = _per_seed(result["ablation_rows"], "auc", seeds, method=name, num_answers=k)
            out.append(_cell(dataset, ablation_key(name), f"auc@{k}", table, seeds))
    for metric in ("auc", "accuracy"):
        table = _per_seed(result.get("reference_rows", []), metric, seeds, method=MEAN_USER)
        out.append(_cell(dataset, "mean-user-truth", f"{metric}@0", table, seeds) if any(table) else None)
    table = _per_seed(result.get("information_rows", []), "auc", seeds, method="whole pool", num_answers=-1)
    out.append(_cell(dataset, "pref-whole-pool", "auc@pool", table, seeds) if any(table) else None)
    scaling = result.get("scaling_rows", [])
    for u, m in sorted({(r["num_train_users"], r["answers_per_user"]) for r in scaling}):
        table = _per_seed(scaling, "auc", seeds, num_train_users=u, answers_per_user=m)
        at = result["config"]["scaling_at"]
        out.append(_cell(dataset, f"pref-active-users{u}-answers{m}", f"auc@{at}", table, seeds))
    return [row for row in out if row is not None]


def scaling_setting(method: str) -> tuple[int, int]:
    """(training users, answers per user) of a scaling row's key ``pref-active-users<u>-answers<m>``."""
    match = re.fullmatch(r"pref-active-users(\d+)-answers(\d+)", method)
    if match is None:
        raise ValueError(f"Not a scaling key: {method!r}")
    return int(match[1]), int(match[2])


def run_pref_populations(config: PrefExperimentConfig, datasets: tuple[str, ...]) -> dict[str, dict]:
    """`run_attributes_experiment` for each population of ``datasets`` (``config.dataset`` replaced), sharing the
    embeddings and the encoder's states: the populations answer pairs of the same response bank."""
    encoder = None
    if config.finetune is not None:
        encoder = EncoderStates(config.embedding_model, config.finetune.num_blocks, config.max_length)
    cache: dict[str, torch.Tensor] = {}
    return {name: run_attributes_experiment(replace(config, dataset=name), cache, encoder) for name in datasets}


def _row(rows: list[dict], dataset: str, method: str, metric: str) -> dict:
    from plus.evaluation import find_row

    row = find_row(rows, dataset, "test_new_users", "all", method, metric)
    if row is None:
        raise KeyError(f"table.json has no row for {dataset} / {method} / {metric}")
    return row


def factor_curve(rows: list[dict], dataset: str, num_answers: int, full_j: int) -> list[tuple[int, dict]]:
    """(J, AUC row after ``num_answers`` answers) for every J of the ablation, the full method counting as
    ``full_j``; sorted by J."""
    curve = [(full_j, _row(rows, dataset, "pref-active", f"auc@{num_answers}"))]
    for row in rows:
        name = row["method"].removeprefix("pref-active-j")
        if row["dataset"] == dataset and row["metric"] == f"auc@{num_answers}" and name.isdigit():
            curve.append((int(name), row))
    return sorted(curve, key=lambda x: x[0])


def saturating_factors(curve: list[tuple[int, dict]], tolerance: float = 0.01) -> int:
    """The smallest J whose mean AUC is within ``tolerance`` of the best J's."""
    best = max(row["mean"] for _, row in curve)
    return next(j for j, row in curve if row["mean"] >= best - tolerance)


def single_model_table(rows: list[dict], datasets: tuple[str, ...]) -> list[dict]:
    """Per population, before any answer: the single BT model's AUC and that of ranking by the training users' mean
    true reward (the best a single reward model could aim at), "mean [low, high]" in %."""
    from plus.evaluation import format_interval

    return [
        {
            "population": name,
            "single BT": format_interval(_row(rows, name, "btl", "auc@0")),
            "mean training user (truth)": format_interval(_row(rows, name, "mean-user-truth", "auc@0")),
        }
        for name in datasets
    ]


def finetune_losses(results: dict[str, dict]) -> list[dict]:
    """Per population and seed: PReF's training loss over every answer before and after fine-tuning phi's encoder
    block (`plus.factorization.finetune.finetune_pref`), read from the fits' histories."""
    out = []
    for name, result in results.items():
        for key, history in sorted(result["fit_history"].items()):
            seed, group, method = key.split("/", 2)
            full = [row["finetune_losses/pref_full"] for row in history if "finetune_losses/pref_full" in row]
            if method == FINETUNED and len(full) == 2:
                out.append({"population": name, "seed": int(seed.removeprefix("seed")), "before": full[0],
                            "after": full[1]})  # fmt: skip
    return out


def _mean_at(rows: list[dict], num_answers: int, key: str, method: str) -> float:
    """The mean of ``key`` over ``method``'s rows at ``num_answers`` answers (NaN when there are none)."""
    values = [r[key] for r in rows if r["method"] == method and r["num_answers"] == num_answers and key in r]
    return float(torch.tensor(values).mean()) if values else float("nan")


def active_vs_random_table(results: dict[str, dict], rows: list[dict], counts: tuple[int, ...]) -> list[dict]:
    """Per population and number of answers: the mean log-determinant of the information matrix of the questions
    asked by active and by random PReF, their mean asked margin (`question_information`), and the AUC difference,
    active minus random (points, with its interval)."""
    from plus.evaluation import format_interval

    out = []
    for name, result in results.items():
        info = result["information_rows"]
        for k in counts:
            mean = partial(_mean_at, info, k)
            out.append(
                {
                    "population": name,
                    "answers": k,
                    "log det, active": round(mean("log_det", "PReF (active)"), 1),
                    "log det, random": round(mean("log_det", "PReF (random)"), 1),
                    "asked margin, active": round(mean("asked_margin", "PReF (active)"), 2),
                    "asked margin, random": round(mean("asked_margin", "PReF (random)"), 2),
                    "AUC active - random (points)": format_interval(
                        _row(rows, name, "pref-active-minus-random", f"auc@{k}")
                    ),
                }
            )
    return out


def closing_note(results: dict[str, dict], rows: list[dict], wall_time_s: float, profile: str) -> str:
    """The notebook's closing note (markdown), per population: AUC at 10 answers, active minus random at 10 and 40
    answers, the J at which AUC saturates, the fine-tuned phi and the scaling study, with 95% intervals; then the
    wall time."""
    from plus.evaluation import format_interval

    lines = []
    for name, result in results.items():
        config = result["config"]
        counts = config["answer_counts"]
        at = 10 if 10 in counts else max(counts)
        last = max(counts)
        active, random_ = _row(rows, name, "pref-active", f"auc@{at}"), _row(rows, name, "pref-random", f"auc@{at}")
        reported = REPORTED_ATTRIBUTES["auc"]["PReF (active)"].get(at) if name == "attributes" else None
        gaps = [_row(rows, name, "pref-active-minus-random", f"auc@{k}") for k in sorted({at, last})]
        lines.append(
            f"- **{name}**: AUC at {at} answers (active PReF) {format_interval(active)}"
            + (f" (the paper *reports* about {reported} on its Attributes users)" if reported is not None else "")
            + f"; random questions {format_interval(random_)}; active minus random "
            + " and ".join(f"{format_interval(g)} points at {g['metric'].split('@')[1]}" for g in gaps)
            + f" answers; single BT {format_interval(_row(rows, name, 'btl', f'auc@{at}'))}."
        )
        ablation_at = 10 if 10 in config["ablation_counts"] else max(config["ablation_counts"])
        curve = factor_curve(rows, name, ablation_at, config["pref"]["num_factors"])
        tuned = [r for r in rows if r["dataset"] == name and r["method"] == ablation_key(FINETUNED)
                 and r["metric"] == f"auc@{ablation_at}"]  # fmt: skip
        full = _row(rows, name, "pref-active", f"auc@{ablation_at}")
        sentence = (
            f"  AUC at {ablation_at} answers reaches within 0.01 of its best at J = {saturating_factors(curve)} "
            f"(J = {', '.join(str(j) for j, _ in curve)} tried)"
        )
        true = [r for r in rows if r["dataset"] == name and r["method"] == ablation_key(TRUE_PHI)
                and r["metric"] == f"auc@{ablation_at}"]  # fmt: skip
        if true:
            sentence += f"; with the true base rewards as phi {format_interval(true[0])}"
        if tuned:
            sentence += f"; phi with its top encoder block fine-tuned {format_interval(tuned[0])} vs frozen " + (
                format_interval(full)
            )
        scaling = [r for r in rows if r["dataset"] == name and r["method"].startswith("pref-active-users")]
        if scaling:
            fewest, most = (scaling_setting(r["method"]) for r in (scaling[0], scaling[-1]))
            sentence += (
                f"; trained on {fewest[0]} users x {fewest[1]} answers {format_interval(scaling[0])}, on "
                f"{most[0]} x {most[1]} {format_interval(scaling[-1])}"
            )
        lines.append(sentence + ".")
    timing = sum(result["timing"].get("total_s", 0.0) for result in results.values())
    lines.append(
        f"- **Wall time** of this notebook at the `{profile}` profile: {wall_time_s / 60:.1f} min "
        f"({timing:.0f} s in the experiments)."
    )
    return "\n".join(lines)
