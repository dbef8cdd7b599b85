"""PReF on tensors: base reward functions phi, user weights lambda, the SVD warm start, the regularised BT fit,
a new user's lambda by logistic regression, active question selection and best-of-N selection.

User i's reward is r_i(x, y) = lambda_i . phi(x, y), phi: (x, y) -> R^J, so
P(y1 > y2 | x, i) = sigmoid(lambda_i . (phi(x, y1) - phi(x, y2))).

Departures from the paper (Shenfeld et al. 2025) and the authors' code (PReF_code), each a choice:
- phi: the paper's is the last-token state of Qwen2.5-0.5B, fully fine-tuned, through Linear(hidden, J); here
  a trainable head (`RewardBasis`: Linear(H, J), or a small MLP) on a frozen backbone's features, computed once
  per response, which is what a CPU affords (`plus.factorization.finetune` measures what it costs by
  fine-tuning the encoder's top block after this fit);
- the warm start imputes the centred matrix (2P - 1, missing entries start at 0) at rank J; the authors' code
  imputes the uncentred one (so its result depends on the order of each pair) at rank 100 (a no-op whenever
  pairs or users number <= 100);
- phi and the training users' lambdas are fitted with Adam, full batch (the authors: SGD), which converges in
  the few hundred epochs a CPU run affords (not compared with SGD here);
- a new user's lambda is fitted by Newton's method with an L2 pull toward the training users' mean
  (`PrefConfig.user_l2`; the authors: SGD for 5,000 epochs, no regulariser): with a handful of answers the
  unregularised problem is often separable;
- the first active question is chosen by the criterion at the prior (the authors: at random), so a run is
  deterministic and the first answer is already the most informative one at the prior.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrefConfig:
    """PReF hyper-parameters; defaults are the paper's where it gives them."""

    num_factors: int = 5
    """J, the number of base reward functions (the paper: 5; gains saturate near 6)."""
    l2_weight: float = 0.02
    """Weight of the mean L2 norm of phi(y1) - phi(y2) added to the BT loss; 0 switches it off."""
    use_svd: bool = True
    """Warm-start phi and lambda from the SVD of the imputed pair-by-user matrix (False: random start)."""
    num_svd_rounds: int = 10
    """Rounds of iterative rank-J SVD imputation of the missing labels."""
    prior_precision: float = 0.001
    """Sigma_0 = prior_precision * I, the starting information matrix of active question selection."""
    user_l2: float = 1.0
    """L2 penalty (1/C of logistic regression) pulling a new user's lambda toward the training users' mean."""
    head_hidden: int = 0
    """Hidden width of phi's head on the frozen features: 0 = Linear(H, J) (the paper's head), > 0 = a 1-layer MLP."""
    learning_rate: float = 3e-3
    """Adam learning rate of the warm start and the BT fit."""
    num_warm_start_epochs: int = 200
    """Full-batch epochs of the MSE fit of phi differences to the SVD pair factors."""
    num_epochs: int = 300
    """Full-batch epochs of the regularised BT fit of phi and the training users' lambdas."""
    num_newton_steps: int = 25
    """Newton steps of a new user's logistic regression (a J-dimensional convex problem)."""

    def __post_init__(self) -> None:
        from plus.config import check_number

        for name in ("num_factors", "num_svd_rounds", "num_warm_start_epochs", "num_epochs", "num_newton_steps"):
            check_number(self, name, 1, integer=True)
        check_number(self, "head_hidden", 0, integer=True)
        for name in ("l2_weight", "user_l2"):
            check_number(self, name, 0)
        for name in ("prior_precision", "learning_rate"):
            check_number(self, name, 0, above=True)
        if not isinstance(self.use_svd, bool):
            raise ValueError(f"PrefConfig.use_svd must be True or False, got {self.use_svd!r}")


# ---------------------------------------------------------------------------------------------------------------
# SVD warm start


def centre_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels in [0, 1] (1: first preferred, 0.5: tie, NaN: not answered) -> 2P - 1 in [-1, 1], NaN kept.

    Swapping a pair's order turns a label p into 1 - p but phi(y1) - phi(y2) into its negative; only the
    centred label turns into its negative too, so only the centred matrix is consistent with
    lambda . (phi(y1) - phi(y2)), and everything the warm start does (imputation, SVD) works on it."""
    return 2 * labels - 1


def impute_low_rank(matrix: torch.Tensor, rank: int, num_rounds: int = 10) -> torch.Tensor:
    """Iterative rank-``rank`` SVD imputation of a centred (P, U) label matrix (`centre_labels`) whose missing
    entries are NaN.

    Missing entries start at 0 (no preference); each round replaces them (only them) by the rank-``rank``
    reconstruction, clipped to [-1, 1]. Observed entries are never changed. On the centred matrix the result
    does not depend on the order of each pair: flipping a pair negates its row, observed and imputed alike."""
    if matrix.dim() != 2:
        raise ValueError(f"impute_low_rank expects a (pairs, users) matrix, got shape {tuple(matrix.shape)}")
    if rank < 1 or rank > min(matrix.shape):
        raise ValueError(f"rank must be in [1, {min(matrix.shape)}] for a {tuple(matrix.shape)} matrix, got {rank}")
    missing = torch.isnan(matrix)  # (P, U)
    filled = torch.where(missing, torch.zeros_like(matrix), matrix)
    for _ in range(num_rounds):
        u, s, vh = torch.linalg.svd(filled, full_matrices=False)
        low_rank = (u[:, :rank] * s[:rank]) @ vh[:rank]  # (P, U)
        filled = torch.where(missing, low_rank.clamp(-1.0, 1.0), matrix)
    return filled


def svd_factors(centred: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair factors U_J sqrt(S_J) (P, J) and user factors V_J sqrt(S_J) (U, J) of a complete centred label
    matrix (`centre_labels`, then `impute_low_rank`)."""
    u, s, vh = torch.linalg.svd(centred, full_matrices=False)
    root = s[:rank].sqrt()  # (J,)
    pair_factors = u[:, :rank] * root  # (P, J)
    user_factors = vh[:rank].T * root  # (U, J)
    if rank > pair_factors.shape[1]:  # fewer singular values than J: pad with zero factors
        pad = rank - pair_factors.shape[1]
        pair_factors = F.pad(pair_factors, (0, pad))
        user_factors = F.pad(user_factors, (0, pad))
    return pair_factors, user_factors


# ---------------------------------------------------------------------------------------------------------------
# phi and the regularised BT fit


class RewardBasis(nn.Module):
    """phi: frozen features (..., H) -> J base rewards (..., J); Linear(H, J) or a one-hidden-layer MLP."""

    def __init__(self, input_dim: int, num_factors: int, hidden: int = 0) -> None:
        super().__init__()
        if hidden > 0:
            layers = [nn.Linear(input_dim, hidden), nn.GELU(), nn.Linear(hidden, num_factors)]
            self.net: nn.Module = nn.Sequential(*layers)
        else:
            self.net = nn.Linear(input_dim, num_factors)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


@dataclass
class PrefModel:
    """A fitted factorisation: phi (a head on frozen features) and the training users' weights."""

    basis: RewardBasis
    user_weights: torch.Tensor  # (U, J) lambda of each training user
    config: PrefConfig

    @torch.no_grad()
    def phi(self, features: torch.Tensor) -> torch.Tensor:
        """Base rewards of responses: (R, H) -> (R, J)."""
        return self.basis(features)

    @property
    def prior_mean(self) -> torch.Tensor:
        """The training users' mean lambda (J,): a new user's weights before any answer."""
        return self.user_weights.mean(0)


def observed_entries(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (pair, user, label) triples of a (P, U) label matrix that are observed and not ties, each (N,)."""
    keep = ~torch.isnan(labels) & (labels != 0.5)  # ties carry no direction and are dropped, as in the paper
    pair_idx, user_idx = keep.nonzero(as_tuple=True)
    return pair_idx, user_idx, labels[pair_idx, user_idx]


def pref_loss(
    user_weights: torch.Tensor, diffs: torch.Tensor, labels: torch.Tensor, l2_weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """BT cross-entropy of sigmoid(lambda_u . d) against labels plus l2_weight * mean ||d||_2.

    user_weights (N, J) and diffs (N, J) are per observation (diff = phi(y1) - phi(y2)), labels (N,) in {0, 1}."""
    logits = (user_weights * diffs).sum(-1)  # (N,)
    bt = F.binary_cross_entropy_with_logits(logits, labels)
    l2 = diffs.norm(dim=-1).mean()
    return bt + l2_weight * l2, {"losses/bt": bt.item(), "losses/l2": l2.item()}


def fit_pref(
    features: torch.Tensor,
    pairs: torch.Tensor,
    labels: torch.Tensor,
    config: PrefConfig,
    seed: int = 0,
) -> tuple[PrefModel, list[dict[str, float]]]:
    """Fit phi and the training users' lambdas.

    features (R, H) are frozen response features; pairs (P, 2) index them as (first, second); labels (P, U) hold
    1 (first preferred), 0, 0.5 (tie) or NaN (not answered). Steps: (1) if ``config.use_svd``, impute the centred
    label matrix (2P - 1) by iterative rank-J SVD, start the users at V_J sqrt(S_J) and fit phi by MSE so that
    phi(y1) - phi(y2) ~ U_J sqrt(S_J); otherwise start at random; (2) minimise the BT loss plus
    ``l2_weight`` * mean ||phi(y1) - phi(y2)|| over phi and all lambdas with Adam, full batch. Returns the model and
    one metrics row per logged epoch."""
    num_pairs, num_users = labels.shape
    if pairs.shape != (num_pairs, 2):
        raise ValueError(f"pairs must be (P, 2) with P = {num_pairs} rows of labels, got {tuple(pairs.shape)}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the head's initialisation
    J = config.num_factors
    basis = RewardBasis(features.shape[1], J, config.head_hidden)
    first, second = features[pairs[:, 0]], features[pairs[:, 1]]  # (P, H) each
    history: list[dict[str, float]] = []

    if config.use_svd:
        filled = impute_low_rank(centre_labels(labels), min(J, num_pairs, num_users), config.num_svd_rounds)
        pair_factors, user_init = svd_factors(filled, J)  # (P, J), (U, J)
        optimizer = torch.optim.Adam(basis.parameters(), lr=config.learning_rate)
        for _ in range(config.num_warm_start_epochs):
            loss = F.mse_loss(basis(first) - basis(second), pair_factors)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        history.append({"epoch": -1, "losses/warm_start_mse": loss.item()})
    else:
        user_init = torch.randn(num_users, J, generator=generator) / math.sqrt(J)

    user_weights = nn.Parameter(user_init.clone())
    pair_idx, user_idx, targets = observed_entries(labels)
    if len(targets) == 0:
        raise ValueError("fit_pref: the label matrix has no observed, non-tie entries")
    optimizer = torch.optim.Adam([*basis.parameters(), user_weights], lr=config.learning_rate)
    for epoch in range(config.num_epochs):
        diffs = basis(first) - basis(second)  # (P, J)
        loss, metrics = pref_loss(user_weights[user_idx], diffs[pair_idx], targets, config.l2_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if epoch % 50 == 0 or epoch == config.num_epochs - 1:
            history.append({"epoch": epoch, **metrics})
    basis.eval()
    return PrefModel(basis=basis, user_weights=user_weights.detach(), config=config), history


# ---------------------------------------------------------------------------------------------------------------
# A new user: logistic regression for lambda, active questions


def fit_user_weights(
    diffs: torch.Tensor,
    labels: torch.Tensor,
    prior_mean: torch.Tensor,
    l2: float = 1.0,
    num_steps: int = 25,
) -> torch.Tensor:
    """A new user's lambda (J,) by L2-regularised logistic regression on frozen phi differences.

    Minimises sum_k BCE(sigmoid(lambda . d_k), y_k) + l2 / 2 * ||lambda - prior_mean||^2 by Newton's method;
    diffs (n, J), labels (n,) in [0, 1] (ties 0.5 pull toward indifference). With no answers it is prior_mean."""
    lam = prior_mean.clone().double()
    if len(labels) == 0:
        return lam.to(prior_mean.dtype)
    d, y, mu = diffs.double(), labels.double(), prior_mean.double()
    eye = torch.eye(len(mu), dtype=torch.float64)
    for _ in range(num_steps):
        p = torch.sigmoid(d @ lam)  # (n,)
        grad = d.T @ (p - y) + l2 * (lam - mu)  # (J,)
        hessian = d.T @ (d * (p * (1 - p))[:, None]) + (l2 + 1e-9) * eye  # (J, J)
        step = torch.linalg.solve(hessian, grad)
        lam = lam - step
        if step.abs().max() < 1e-10:
            break
    return lam.to(prior_mean.dtype)


def sigmoid_slope(logits: torch.Tensor) -> torch.Tensor:
    """sigma'(z) = sigma(z) (1 - sigma(z))."""
    p = torch.sigmoid(logits)
    return p * (1 - p)


def information_matrix(
    answered_diffs: torch.Tensor, user_weights: torch.Tensor, prior_precision: float
) -> torch.Tensor:
    """Sigma = prior_precision I + sum_k sigma'(lambda . v_k) v_k v_k^T over answered pairs; (n, J) -> (J, J)."""
    J = user_weights.shape[0]
    slopes = sigmoid_slope(answered_diffs @ user_weights)  # (n,)
    return prior_precision * torch.eye(J, dtype=user_weights.dtype) + answered_diffs.T @ (
        answered_diffs * slopes[:, None]
    )


def question_scores(
    candidate_diffs: torch.Tensor, answered_diffs: torch.Tensor, user_weights: torch.Tensor, prior_precision: float
) -> torch.Tensor:
    """The information criterion sigma'(lambda . v)^2 v^T Sigma^-1 v of each candidate pair; (C, J) -> (C,)."""
    sigma = information_matrix(answered_diffs, user_weights, prior_precision)  # (J, J)
    solved = torch.linalg.solve(sigma, candidate_diffs.T).T  # (C, J) rows Sigma^-1 v
    quadratic = (candidate_diffs * solved).sum(-1)  # (C,)
    return sigmoid_slope(candidate_diffs @ user_weights).square() * quadratic


def select_question(
    candidate_diffs: torch.Tensor, answered_diffs: torch.Tensor, user_weights: torch.Tensor, prior_precision: float
) -> int:
    """Index of the candidate pair that maximises the information criterion."""
    return int(question_scores(candidate_diffs, answered_diffs, user_weights, prior_precision).argmax())


# ---------------------------------------------------------------------------------------------------------------
# Alignment: best-of-N


def best_of_n(rewards: torch.Tensor) -> torch.Tensor:
    """Index of the highest-reward candidate per prompt: (B, N) -> (B,)."""
    return rewards.argmax(-1)


def win_rate(true_rewards: torch.Tensor, picked: torch.Tensor, default: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Share of prompts where the picked candidate beats the default one under the true rewards (ties count 1/2).

    true_rewards (B, N); picked and default (B,) candidate indices. Returns the rate and the per-prompt outcomes."""
    rows = torch.arange(true_rewards.shape[0])
    picked_reward, default_reward = true_rewards[rows, picked], true_rewards[rows, default]
    outcome = (picked_reward > default_reward).float() + 0.5 * (picked_reward == default_reward).float()  # (B,)
    return outcome.mean().item(), outcome
