"""The new-user protocol: every method gets the same n answers from a user it has never seen, then predicts that
user's held-out pairs and picks a best-of-N response for them.

Methods are objects with one small interface (`NewUserMethod`): ``fit`` on the training users, ``user_rewards``
(a reward for every response in the bank, given a new user's answers) and, for active methods, ``next_question``.
Here: a single BT model, a BT model per user, PReF with active and with random questions, and new-user forms of
PAL-B (only the mixture weights over K prototypes are learned) and VPL (an encoder over the answered pairs gives a
latent z; reward = MLP([features; z])), all on the same frozen response features. Two references that learn no
user: `FixedRewards` (a reward given in advance) and `TruePhiPref` (PReF on the true base rewards). The PAL-B and
VPL networks are those of the text baselines (`plus.user_models`); only the training and new-user fitting are
specific to here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from plus.evaluation import pair_credit
from plus.factorization.core import (
    PrefConfig,
    PrefModel,
    best_of_n,
    fit_pref,
    fit_user_weights,
    observed_entries,
    select_question,
    win_rate,
)
from plus.losses import bradley_terry_loss
from plus.user_models import (
    PAL_NUM_PROTOTYPES,
    PalNetwork,
    VplNetwork,
    fit_mixture_logits,
    initial_user_logits,
    vpl_loss,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResponseBank:
    """Frozen features of every response the protocol refers to (rows are response indices)."""

    features: torch.Tensor  # (R, H) features of (prompt, response)
    prompt_features: torch.Tensor  # (R, H) features of the response's prompt alone (PAL's prompt-conditioned points)

    def __post_init__(self) -> None:
        if self.features.dim() != 2 or self.features.shape != self.prompt_features.shape:
            raise ValueError(
                f"ResponseBank.features and prompt_features must both be (R, H), got "
                f"{tuple(self.features.shape)} and {tuple(self.prompt_features.shape)}"
            )


@dataclass(frozen=True)
class TrainingPopulation:
    """The training users' labels on shared pairs."""

    pairs: torch.Tensor  # (P, 2) response indices (first, second)
    labels: torch.Tensor  # (P, U) 1 first preferred, 0 second, 0.5 tie, NaN not answered

    def __post_init__(self) -> None:
        if self.pairs.dim() != 2 or self.pairs.shape[1] != 2 or self.labels.shape[0] != self.pairs.shape[0]:
            raise ValueError(
                f"TrainingPopulation.pairs must be (P, 2) and labels (P, U), got {tuple(self.pairs.shape)} "
                f"and {tuple(self.labels.shape)}"
            )


@dataclass(frozen=True)
class NewUser:
    """A held-out user: questions the protocol may ask, held-out pairs, and best-of-N candidates."""

    user_id: str
    question_pairs: torch.Tensor  # (Q, 2) the pool of pairs the user can be asked about
    question_labels: torch.Tensor  # (Q,) the user's answers (1 first preferred, 0 second, 0.5 tie)
    test_pairs: torch.Tensor  # (T, 2) held-out pairs
    test_labels: torch.Tensor  # (T,)
    candidates: torch.Tensor | None = None  # (B, N) response indices: N candidate responses for each of B prompts
    candidate_rewards: torch.Tensor | None = None  # (B, N) the user's ground-truth reward of each candidate
    default: torch.Tensor | None = None  # (B,) the default (unpersonalised) candidate of each prompt
    num_given: int | None = None  # passive methods get the first num_given questions before the others (None: all)
    rewards: torch.Tensor | None = None  # (R,) the user's ground-truth reward of every response (diagnostics only)

    def __post_init__(self) -> None:
        if len(self.question_pairs) != len(self.question_labels) or len(self.test_pairs) != len(self.test_labels):
            raise ValueError(f"NewUser {self.user_id!r}: pairs and labels differ in length")
        if self.candidates is not None and (
            self.candidate_rewards is None
            or self.candidate_rewards.shape != self.candidates.shape
            or self.default is None
            or len(self.default) != len(self.candidates)
        ):
            raise ValueError(f"NewUser {self.user_id!r}: candidates need candidate_rewards (B, N) and default (B,)")


class NewUserMethod(Protocol):
    """What the protocol needs from a method."""

    name: str
    active: bool  # True: the method chooses its questions with next_question

    def fit(self, bank: ResponseBank, population: TrainingPopulation, seed: int) -> None: ...

    def user_rewards(self, bank: ResponseBank, pairs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Reward (R,) of every response for a user who answered pairs (n, 2) with labels (n,)."""
        ...

    def next_question(
        self, bank: ResponseBank, candidates: torch.Tensor, pairs: torch.Tensor, labels: torch.Tensor
    ) -> int:
        """Index into candidates (C, 2) of the next pair to ask (active methods only)."""
        ...


def _chosen_rejected(pairs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected response indices (n,) of pairs (n, 2) with labels (n,); ties are dropped."""
    keep = labels != 0.5
    pairs, labels = pairs[keep], labels[keep]
    first_wins = labels > 0.5
    return torch.where(first_wins, pairs[:, 0], pairs[:, 1]), torch.where(first_wins, pairs[:, 1], pairs[:, 0])


def _population_triples(population: TrainingPopulation) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chosen, rejected response indices and user index (N,) of every non-tie training label."""
    pair_idx, user_idx, labels = observed_entries(population.labels)
    chosen, rejected = _chosen_rejected(population.pairs[pair_idx], labels)
    return chosen, rejected, user_idx


def fit_bradley_terry(
    features: torch.Tensor,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    num_epochs: int = 300,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> nn.Linear:
    """A single linear BT reward r(x, y) = w . features + b on frozen features, full-batch Adam."""
    torch.manual_seed(seed)
    head = nn.Linear(features.shape[1], 1)
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    for _ in range(num_epochs):
        loss = bradley_terry_loss(head(features[chosen]).squeeze(-1), head(features[rejected]).squeeze(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return head.eval()


# ---------------------------------------------------------------------------------------------------------------
# Methods


@dataclass
class SingleBT:
    """One BT reward model for everyone: a new user's answers are ignored."""

    name: str = "Single BT"
    active: bool = False
    num_epochs: int = 300
    rewards: torch.Tensor | None = None  # (R,)
    head: nn.Linear | None = None  # the fitted reward on features (it also scores texts outside the bank)

    def fit(self, bank: ResponseBank, population: TrainingPopulation, seed: int) -> None:
        chosen, rejected, _ = _population_triples(population)
        self.head = fit_bradley_terry(bank.features, chosen, rejected, num_epochs=self.num_epochs, seed=seed)
        with torch.no_grad():
            self.rewards = self.head(bank.features).squeeze(-1)

    def user_rewards(self, bank: ResponseBank, pairs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        assert self.rewards is not None, "fit first"
        return self.rewards


@dataclass
class FixedRewards:
    """A reward given in advance for every response (e.g. the training users' mean true reward): answers are
    ignored. A reference line, not a method that learns."""

    name: str
    rewards: torch.Tensor  # (R,)
    active: bool = False

    def fit(self, bank: ResponseBank, population: TrainingPopulation, seed: int) -> None:
        if self.rewards.shape != (bank.features.shape[0],):
            raise ValueError(f"{self.name}: needs one reward per bank row, got {tuple(self.rewards.shape)}")

    def user_rewards(self, bank: ResponseBank, pairs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.rewards


@dataclass
class PerUserBT:
    """A linear BT model per user, fitted on that user's answers alone (L2-regularised logistic regression on the
    feature differences, 1/C = ``l2``). With no answers every reward is 0."""

    name: str = "BT per user"
    active: bool = False
    l2: float = 1.0

    def fit(self, bank: ResponseBank, population: TrainingPopulation, seed: int) -> None:
        return None  # nothing is shared across users

    def user_rewards(self, bank: ResponseBank, pairs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        diffs = bank.features[pairs[:, 0]] - bank.features[pairs[:, 1]]  # (n, H)
        weights = fit_user_weights(diffs, labels, torch.zeros(bank.features.shape[1]), l2=self.l2)  # (H,)
        return bank.features @ weights


@dataclass
class PrefNewUser:
    """PReF: phi and the training users' lambdas from `fit_pref`; a new user's lambda by logistic regression
    (refit after every answer); questions by the information criterion (``active``) or in random order."""

    config: PrefConfig = field(default_factory=PrefConfig)
    active: bool = True
    name: str = ""
    model: PrefModel | None = None
    phi: torch.Tensor | None = None  # (R, J)
    history: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = self.name or ("PReF (active)" if self.active else "PReF (random)")

    def fit(self, bank: ResponseBank, population: TrainingPopulation, seed: int) -> None:
        self.model, self.history = fit_pref(bank.features, population.pairs, population.labels, self.config, seed)
        self.phi = self.model.phi(bank.features)

    def user_weights(self, pairs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """lambda (J,) of a user who answered pairs (n, 2) with labels (n,)."""
        assert self.model is not None and self.phi is not None, "fit first"
        diffs = self.phi[pairs[:, 0]] - self.phi[pairs[:, 1]]  # (n, J)
        return fit_user_weights(
            diffs, labels, self.model.prior_mean, self.config.user_l2, self.config.num_newton_steps
        )

    def user_rewards(self, bank: ResponseBank, pairs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.phi @ self.user_weights(pairs, labels)  # (R,)

    def next_question(
        self, bank: ResponseBank, candidates: torch.Tensor, pairs: torch.Tensor, labels: torch.Tensor
    ) -> int:
        lam = self.user_weights(pairs, labels)
        candidate_diffs = self.phi[candidates[:, 0]] - self.phi[candidates[:, 1]]  # (C, J)
        answered_diffs = self.phi[pairs[:, 0]] - self.phi[pairs[:, 1]]  # (n, J)
        return select_question(candidate_diffs, answered_diffs, lam, self.config.prior_precision)


@dataclass
class TruePhiPref(PrefNewUser):
    """PReF fitted on the true base rewards instead of learned ones: ``features`` (R, K) are the responses' attribute
    scores projected on the span of the population's profiles (rank K), so phi only has to re-mix them. A control:
    what the protocol reaches when phi is right."""

    features: torch.Tensor | None = None

    def fit(self, bank: ResponseBank, population: TrainingPopulation, seed: int) -> None:
        if self.features is None or len(self.features) != bank.features.shape[0]:
            raise ValueError(f"{self.name}: needs true features with one row per bank response")
        self.model, self.history = fit_pref(self.features, population.pairs, population.labels, self.config, seed)
        self.phi = self.model.phi(self.features)


@dataclass
class PalNewUser:
    """PAL-B new-user form (`plus.user_models.PalNetwork`): prototypes, projections and one row of mixture logits
    per training user fitted on the training users; a new user gets only its K mixture logits, fitted on its answers
    (`plus.user_models.fit_mixture_logits`; zero logits, i.e. the uniform mix, with none)."""

    name: str = "PAL-B"
    active: bool = False
    num_prototypes: int = PAL_NUM_PROTOTYPES
    dim: int = 64
    num_epochs: int = 300
    num_user_steps: int = 50
    learning_rate: float = 3e-3
    user_learning_rate: float = 0.1
    model: PalNetwork | None = None

    def fit(self, bank: ResponseBank, population: TrainingPopulation, seed: int) -> None:
        torch.manual_seed(seed)
        chosen, rejected, user_idx = _population_triples(population)
        model = PalNetwork(bank.features.shape[1], self.dim, self.num_prototypes)
        user_logits = nn.Parameter(initial_user_logits(population.labels.shape[1], self.num_prototypes))  # (U, K)
        optimizer = torch.optim.Adam([*model.parameters(), user_logits], lr=self.learning_rate)
        for _ in range(self.num_epochs):
            logits = user_logits[user_idx]  # (N, K)
            loss = bradley_terry_loss(
                model.reward(logits, bank.features[chosen], bank.prompt_features[chosen]),
                model.reward(logits, bank.features[rejected], bank.prompt_features[rejected]),
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self.model = model.eval()

    def user_rewards(self, bank: ResponseBank, pairs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        assert self.model is not None, "fit first"
        chosen, rejected = _chosen_rejected(pairs, labels)
        logits = fit_mixture_logits(
            self.model,
            (bank.features[chosen], bank.prompt_features[chosen]),
            (bank.features[rejected], bank.prompt_features[rejected]),
            torch.zeros(len(chosen), dtype=torch.long),
            1,
            self.num_user_steps if len(chosen) else 0,
            self.user_learning_rate,
        )  # (1, K)
        with torch.no_grad():
            return self.model.reward(logits.expand(len(bank.features), -1), bank.features, bank.prompt_features)


@dataclass
class VplNewUser:
    """VPL new-user form (`plus.user_models.VplNetwork`): trained on the training users with contexts of 0 to
    ``max_context`` of their own answered pairs and disjoint target pairs (`plus.user_models.vpl_loss`, a constant
    ``kl_weight``); a new user's answers are the context, z = mu."""

    name: str = "VPL"
    active: bool = False
    latent_dim: int = 16
    hidden: int = 128
    max_context: int = 40
    num_targets: int = 16
    users_per_step: int = 32
    num_steps: int = 800
    kl_weight: float = 1e-4
    learning_rate: float = 1e-3
    model: VplNetwork | None = None

    def fit(self, bank: ResponseBank, population: TrainingPopulation, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        chosen, rejected, user_idx = _population_triples(population)
        per_user = [torch.nonzero(user_idx == u).squeeze(-1) for u in range(population.labels.shape[1])]
        per_user = [rows for rows in per_user if len(rows) >= 2]
        if not per_user:
            raise ValueError("VPL needs training users with at least 2 non-tie answers")
        # Targets per user: num_targets, or half the answers of the user with the fewest (small populations).
        num_targets = min(self.num_targets, min(len(rows) for rows in per_user) // 2)
        model = VplNetwork(bank.features.shape[1], self.hidden, self.latent_dim)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.learning_rate)
        feats = bank.features
        for _ in range(self.num_steps):
            picks = torch.randint(len(per_user), (self.users_per_step,), generator=generator)
            ctx_c, ctx_r, masks, tgt_c, tgt_r = [], [], [], [], []
            for u in picks.tolist():
                rows = per_user[u][torch.randperm(len(per_user[u]), generator=generator)]
                targets, rest = rows[:num_targets], rows[num_targets:]
                n = int(torch.randint(min(self.max_context, len(rest)) + 1, (1,), generator=generator))
                ctx = rest[: self.max_context]  # padded to max_context, masked beyond n
                pad = self.max_context - len(ctx)
                ctx_c.append(F.pad(feats[chosen[ctx]], (0, 0, 0, pad)))
                ctx_r.append(F.pad(feats[rejected[ctx]], (0, 0, 0, pad)))
                masks.append(torch.arange(self.max_context) < n)
                tgt_c.append(feats[chosen[targets]])
                tgt_r.append(feats[rejected[targets]])
            mu, log_var = model.encode(torch.stack(ctx_c), torch.stack(ctx_r), torch.stack(masks))  # (B, Z)
            z = model.latent(mu, log_var, generator)[:, None].expand(-1, num_targets, -1)  # (B, T, Z)
            loss, _, _ = vpl_loss(
                model.reward(torch.stack(tgt_c), z), model.reward(torch.stack(tgt_r), z), mu, log_var, self.kl_weight
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self.model = model.eval()

    @torch.no_grad()
    def user_rewards(self, bank: ResponseBank, pairs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        assert self.model is not None, "fit first"
        chosen, rejected = _chosen_rejected(pairs, labels)
        mask = torch.ones(1, len(chosen), dtype=torch.bool)
        mu, _ = self.model.encode(bank.features[chosen][None], bank.features[rejected][None], mask)  # (1, Z)
        return self.model.reward(bank.features, mu.expand(len(bank.features), -1))


# ---------------------------------------------------------------------------------------------------------------
# The protocol


def pair_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """ROC-AUC and accuracy of score = r(first) - r(second) against labels (1 first preferred, 0 second); ties in
    the labels are dropped; a zero score counts as half right (`plus.evaluation.pair_credit`, the package's one
    tie rule). AUC is NaN when only one class is present."""
    keep = labels != 0.5
    scores, labels = scores[keep], labels[keep]
    margins = torch.where(labels > 0.5, scores, -scores)  # r(preferred) - r(other)
    correct = pair_credit(margins, torch.zeros_like(margins))
    auc = float("nan")
    if 0 < labels.sum() < len(labels):
        auc = float(roc_auc_score(labels.numpy(), scores.double().numpy()))
    return {"auc": auc, "accuracy": correct.mean().item()}


def answer_order(method: NewUserMethod, bank: ResponseBank, user: NewUser, count: int, order: torch.Tensor):
    """Yield (n, answered indices into the question pool) for n = 0..count, choosing questions as the method does."""
    answered: list[int] = []
    remaining = order.tolist()
    for n in range(count + 1):
        yield n, torch.tensor(answered, dtype=torch.long)
        if n == count or not remaining:  # a pool smaller than count: later n reuse every answer
            continue
        if method.active:
            idx = torch.tensor(answered, dtype=torch.long)
            pick = method.next_question(
                bank, user.question_pairs[remaining], user.question_pairs[idx], user.question_labels[idx]
            )
            answered.append(remaining.pop(pick))
        else:
            answered.append(remaining.pop(0))


def question_order(user: NewUser, seed: int, position: int) -> torch.Tensor:
    """The passive methods' order of ``user``'s question pool (Q,): its first ``num_given`` questions in a random
    order, then the rest, seeded by ``seed`` and the user's ``position`` in the list of new users."""
    generator = torch.Generator().manual_seed(seed * 100_003 + position)
    given = len(user.question_pairs) if user.num_given is None else user.num_given
    return torch.cat(
        [
            torch.randperm(given, generator=generator),
            given + torch.randperm(len(user.question_pairs) - given, generator=generator),
        ]
    )


def evaluate_new_users(
    methods: list[NewUserMethod],
    bank: ResponseBank,
    users: list[NewUser],
    answer_counts: list[int],
    seed: int,
) -> list[dict[str, float | int | str]]:
    """For every method, user and n in answer_counts: the AUC and accuracy on the user's held-out pairs and the
    best-of-N win rate over the default candidate (ground truth of that user), after n answers.

    Passive methods all get the same answers (a random order of the user's first ``num_given`` questions, then of
    the rest, seeded by ``seed`` and the user's position); active methods choose theirs from the whole pool.
    Methods must be fitted already."""
    rows: list[dict[str, float | int | str]] = []
    max_count = max(answer_counts)
    for position, user in enumerate(users):
        order = question_order(user, seed, position)
        for method in methods:
            for n, answered in answer_order(method, bank, user, max_count, order):
                if n not in answer_counts:
                    continue
                rewards = method.user_rewards(bank, user.question_pairs[answered], user.question_labels[answered])
                scores = rewards[user.test_pairs[:, 0]] - rewards[user.test_pairs[:, 1]]
                row: dict[str, float | int | str] = {
                    "method": method.name,
                    "user_id": user.user_id,
                    "num_answers": n,
                    "num_answered": len(answered),
                    **pair_metrics(scores, user.test_labels),
                }
                if user.candidates is not None:
                    picked = best_of_n(rewards[user.candidates])  # (B,)
                    row["win_rate"], _ = win_rate(user.candidate_rewards, picked, user.default)
                rows.append(row)
    return rows


def summarize(rows: list[dict], keys: tuple[str, ...] = ("method", "num_answers")) -> list[dict]:
    """Mean of auc, accuracy and win_rate over users for each combination of ``keys`` (NaN AUCs are skipped)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    summary = []
    for key, members in groups.items():
        out = dict(zip(keys, key, strict=True))
        for metric in ("auc", "accuracy", "win_rate"):
            values = np.array([m[metric] for m in members if metric in m], dtype=float)
            if len(values):
                out[metric] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        out["num_users"] = len(members)
        summary.append(out)
    return summary
