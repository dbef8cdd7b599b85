"""Losses as small pure typed tensor functions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected). Both (B,); equal rewards give log 2."""
    return F.softplus(rejected - chosen).mean()  # softplus(-d) == -log sigmoid(d), stable for large |d|


def dpl_loss(
    mean_chosen: torch.Tensor, std_chosen: torch.Tensor, mean_rejected: torch.Tensor, std_rejected: torch.Tensor
) -> torch.Tensor:
    """Distributional preference learning (mean-and-variance heads), all (B,):
    mean of softplus(-sqrt(2 pi) * (mu_c - mu_r) / sqrt(s_c^2 + s_r^2))."""
    scale = torch.sqrt(std_chosen.square() + std_rejected.square()).clamp_min(1e-6)
    return F.softplus(-math.sqrt(2 * math.pi) * (mean_chosen - mean_rejected) / scale).mean()


# --- RL losses for the summarizer (PPO with a critic, or a critic-free RLOO / GRPO estimator) ---------------
# Shapes: B rollouts, S summary tokens, K samples per context. ``mask`` is 1 on real summary tokens (a prefix of
# each row: responses are right-padded) and 0 on padding; every masked statistic ignores the padding.


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1; over everything, or along ``dim``. (B, S), (B, S) -> () or (B,)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp_min(1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(values - mean) / std over the masked entries (unbiased variance); padding becomes 0. (B, S) -> (B, S).

    With ``shift_mean=False`` the mean is added back (only the scale changes)."""
    mean = masked_mean(values, mask)
    count = mask.sum().clamp_min(2.0)
    variance = (((values - mean) * mask) ** 2).sum() / (count - 1)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k1 estimate of KL(pi || pi_ref): log pi - log pi_ref at the sampled tokens. (B, S) -> (B, S)."""
    return logprobs - ref_logprobs


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution at each position. (B, S, V) -> (B, S)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def token_rewards(
    score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float, score_clip: float | None = None
) -> torch.Tensor:
    """PPO token rewards: -kl_coef * KL at every summary token, plus the (clipped) sequence score on the last one.

    ``score`` (B,), ``kl`` and ``mask`` (B, S) -> (B, S); zero on padding."""
    if score_clip is not None:
        score = score.clamp(-score_clip, score_clip)
    rewards = -kl_coef * kl * mask  # (B, S)
    last = (mask.sum(1).long() - 1).clamp_min(0)  # (B,) index of the last summary token
    rewards[torch.arange(len(score)), last] += score
    return rewards


def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, vectorised over batch AND time. All (B, S) -> advantages, returns (B, S).

    delta_t = r_t + gamma V_{t+1} - V_t (V after the last summary token is 0), and
    A_t = sum_{k >= t} (gamma lam)^{k - t} delta_k, computed as one (B, S) x (S, S) product with an upper
    triangular discount matrix instead of a reverse Python loop (S is a few hundred tokens at most)."""
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must lie in [0, 1], got {gamma}, {lam}")
    mask = mask.to(values.dtype)
    values = values * mask
    next_values = F.pad(values[:, 1:], (0, 1))  # (B, S) V_{t+1}, 0 past the end
    deltas = (rewards + gamma * next_values - values) * mask  # (B, S)
    steps = torch.arange(values.shape[1], device=values.device)
    offsets = (steps[None, :] - steps[:, None]).to(values.dtype)  # (S, S) k - t
    discount = torch.where(offsets >= 0, (gamma * lam) ** offsets.clamp_min(0), torch.zeros_like(offsets))
    advantages = (deltas @ discount.T) * mask  # (B, S): A[b, t] = sum_k discount[t, k] delta[b, k]
    returns = (advantages + values) * mask
    return advantages, returns


def ppo_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate max(-A ratio, -A clip(ratio, 1 - clip, 1 + clip)): its mean over each sequence's tokens,
    then the mean over sequences (OpenRLHF v0.6's normalisation). A batch's loss is then the mean of its rows'
    losses, so splitting it into micro-batches weighted by their row counts gives the same loss and gradient.

    All (B, S); returns the loss () and the fraction of tokens where the clip was active ()."""
    ratio = torch.exp(logprobs - old_logprobs)  # (B, S)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask, dim=1).mean()
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_fraction.detach()


def ppo_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss 0.5 max((V - R)^2, (clip(V, V_old +- clip) - R)^2): its mean over each sequence's tokens,
    then the mean over sequences (as `ppo_policy_loss`).

    All (B, S); returns the loss () and the fraction of tokens where the clipped term was larger ()."""
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask, dim=1).mean()
    clip_fraction = masked_mean((clipped_error > unclipped_error).float(), mask)
    return loss, clip_fraction.detach()


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out: each sample's reward minus the mean of the OTHER samples of its context.

    (B, K) with K >= 2 samples per context -> (B, K)."""
    samples = rewards.shape[1]
    if samples < 2:
        raise ValueError(f"RLOO needs at least 2 samples per context, got {samples}")
    return rewards - (rewards.sum(1, keepdim=True) - rewards) / (samples - 1)


def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO: rewards standardised within each context's group of samples. (B, K) with K >= 2 -> (B, K)."""
    if rewards.shape[1] < 2:
        raise ValueError(f"GRPO needs at least 2 samples per context, got {rewards.shape[1]}")
    return (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + eps)
