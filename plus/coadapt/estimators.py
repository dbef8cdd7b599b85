"""Advantage estimators of the summarizer's update: one function each, in one registry (`ESTIMATORS`).

Each takes the rollout's clipped rewards R (N,), the per-token KL to the reference (N, S), the summary mask (N, S),
the critic's values (N, S) (PPO only, else None) and the config, and returns the advantages (N, S) and the
critic's targets (N, S) (None without a critic). Whitening over the rollout comes after, in the loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from plus.losses import gae_advantages, grpo_advantages, rloo_advantages, token_rewards

if TYPE_CHECKING:
    from plus.coadapt.config import CoadaptConfig

Estimator = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, "CoadaptConfig"],
    tuple[torch.Tensor, torch.Tensor | None],
]


def ppo(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None, config: CoadaptConfig
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The paper's: token rewards -kl_coef KL_t on every summary token plus R on the last one, GAE (gamma, lam)
    over the critic's values."""
    if values is None:
        raise ValueError("the ppo estimator needs the critic's values")
    rewards = token_rewards(scores, kl, mask, config.kl_coef)  # (N, S)
    return gae_advantages(rewards, values, mask, config.gamma, config.lam)


def _per_sequence(
    estimate: Callable[[torch.Tensor], torch.Tensor], scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor,
    config: CoadaptConfig,
) -> tuple[torch.Tensor, None]:  # fmt: skip
    sequence_rewards = (scores - config.kl_coef * kl.sum(1)).view(-1, config.samples_per_context)  # (B, K)
    return estimate(sequence_rewards).view(-1, 1) * mask, None  # (N, S): one advantage per summary


def rloo(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None, config: CoadaptConfig
) -> tuple[torch.Tensor, None]:
    """Critic-free: K summaries per context, sequence reward R - kl_coef sum_t KL_t, leave-one-out baseline."""
    return _per_sequence(rloo_advantages, scores, kl, mask, config)


def grpo(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None, config: CoadaptConfig
) -> tuple[torch.Tensor, None]:
    """Critic-free: the same sequence reward, standardised within each context's group of K."""
    return _per_sequence(grpo_advantages, scores, kl, mask, config)


ESTIMATORS: dict[str, Estimator] = {"ppo": ppo, "rloo": rloo, "grpo": grpo}
"""``CoadaptConfig.estimator`` -> its function. ``ppo`` is the one that trains a critic."""
