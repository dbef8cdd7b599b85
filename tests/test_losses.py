import math

import pytest
import torch

from plus.losses import (
    bradley_terry_loss,
    dpl_loss,
    entropy_from_logits,
    gae_advantages,
    grpo_advantages,
    kl_penalty,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
    rloo_advantages,
    token_rewards,
)


def test_bt_loss_of_equal_rewards_is_log2():
    rewards = torch.randn(7)
    assert torch.isclose(bradley_terry_loss(rewards, rewards), torch.tensor(math.log(2)))


def test_bt_loss_matches_naive_log_sigmoid_and_is_stable():
    chosen, rejected = torch.randn(16), torch.randn(16)
    naive = -torch.log(torch.sigmoid(chosen - rejected)).mean()
    assert torch.isclose(bradley_terry_loss(chosen, rejected), naive, atol=1e-6)
    assert torch.isfinite(bradley_terry_loss(torch.tensor([-500.0]), torch.tensor([500.0])))


def test_dpl_loss_is_log2_for_equal_means_and_falls_with_margin():
    mean, std = torch.zeros(4), torch.ones(4)
    assert torch.isclose(dpl_loss(mean, std, mean, std), torch.tensor(math.log(2)))
    assert dpl_loss(mean + 1, std, mean, std) < dpl_loss(mean + 0.1, std, mean, std)


# --- RL losses ------------------------------------------------------------------------------------------------


def _prefix_mask(lengths: list[int], width: int) -> torch.Tensor:
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).float()


def _gae_loop(rewards, values, lengths, gamma, lam):
    """The textbook reverse loop, one sequence at a time, only over its real tokens."""
    advantages = torch.zeros_like(rewards)
    for b, length in enumerate(lengths):
        last = 0.0
        for t in reversed(range(length)):
            next_value = values[b, t + 1] if t + 1 < length else 0.0
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            last = delta + gamma * lam * last
            advantages[b, t] = last
    return advantages, (advantages + values) * _prefix_mask(lengths, rewards.shape[1])


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_vectorised_gae_equals_plain_loop(gamma, lam):
    torch.manual_seed(0)
    lengths, width = [5, 1, 9, 3], 9
    mask = _prefix_mask(lengths, width)
    rewards, values = torch.randn(4, width), torch.randn(4, width)
    # Garbage on padding must not leak into the result.
    rewards, values = rewards * mask + 100 * (1 - mask), values * mask - 50 * (1 - mask)
    fast, fast_returns = gae_advantages(rewards, values, mask, gamma, lam)
    slow, slow_returns = _gae_loop(rewards * mask, values * mask, lengths, gamma, lam)
    assert torch.allclose(fast, slow, atol=1e-5)
    assert torch.allclose(fast_returns, slow_returns, atol=1e-5)


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value():
    rewards, values, mask = torch.randn(2, 6), torch.randn(2, 6), torch.ones(2, 6)
    advantages, returns = gae_advantages(rewards, values, mask, 1.0, 1.0)
    reward_to_go = rewards.flip(1).cumsum(1).flip(1)
    assert torch.allclose(advantages, reward_to_go - values, atol=1e-5)
    assert torch.allclose(returns, reward_to_go, atol=1e-5)


def test_token_rewards_put_the_clipped_score_on_the_last_token():
    mask = _prefix_mask([3, 1], 4)
    kl = torch.full((2, 4), 2.0)
    rewards = token_rewards(torch.tensor([50.0, -1.0]), kl, mask, kl_coef=0.01, score_clip=10.0)
    expected = torch.tensor([[-0.02, -0.02, 9.98, 0.0], [-1.02, 0.0, 0.0, 0.0]])
    assert torch.allclose(rewards, expected)


def test_masked_whiten_has_zero_mean_unit_variance_on_the_mask():
    mask = _prefix_mask([4, 2, 6], 6)
    whitened = masked_whiten(torch.randn(3, 6) * 5 + 3, mask)
    assert torch.isclose(masked_mean(whitened, mask), torch.tensor(0.0), atol=1e-5)
    assert torch.isclose(whitened[mask.bool()].std(), torch.tensor(1.0), atol=1e-4)
    assert torch.all(whitened[~mask.bool()] == 0)


def test_kl_is_zero_against_itself_and_entropy_of_uniform_is_log_v():
    logprobs = torch.randn(2, 3)
    assert torch.all(kl_penalty(logprobs, logprobs) == 0)
    assert torch.allclose(entropy_from_logits(torch.zeros(2, 3, 11)), torch.full((2, 3), math.log(11)))


def test_ppo_policy_loss_is_minus_mean_advantage_at_ratio_one_and_clips():
    mask = _prefix_mask([3, 2], 3)
    advantages, logprobs = torch.randn(2, 3), torch.randn(2, 3)
    loss, clip_fraction = ppo_policy_loss(logprobs, logprobs, advantages, mask)
    assert torch.isclose(loss, -masked_mean(advantages, mask, dim=1).mean()) and clip_fraction == 0
    # A ratio of e (far beyond 1.2) with positive advantages: the clipped term wins and the gradient vanishes.
    new = (logprobs + 1.0).requires_grad_()
    loss, clip_fraction = ppo_policy_loss(new, logprobs, torch.ones(2, 3), mask, clip=0.2)
    loss.backward()
    assert torch.isclose(loss, torch.tensor(-1.2)) and clip_fraction == 1
    assert torch.all(new.grad == 0)


def test_ppo_value_loss_is_half_mse_inside_the_clip_and_pessimistic_outside():
    mask = torch.ones(1, 2)
    returns, old = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 0.0]])
    loss, _ = ppo_value_loss(torch.tensor([[0.1, -0.1]]), old, returns, mask, clip=0.2)
    assert torch.isclose(loss, 0.5 * torch.tensor((0.81 + 1.21) / 2))
    # Moving past the clip towards the return is not rewarded: the clipped value (0.2) still counts.
    loss, fraction = ppo_value_loss(torch.tensor([[0.9, 0.9]]), old, returns, mask, clip=0.2)
    assert torch.isclose(loss, torch.tensor(0.5 * 0.64)) and fraction == 1


def test_rloo_and_grpo_advantages_sum_to_zero_per_context():
    rewards = torch.randn(5, 4)
    rloo = rloo_advantages(rewards)
    assert torch.allclose(rloo.sum(1), torch.zeros(5), atol=1e-5)
    assert torch.isclose(rloo[0, 0], rewards[0, 0] - rewards[0, 1:].mean())
    grpo = grpo_advantages(rewards)
    assert torch.allclose(grpo.mean(1), torch.zeros(5), atol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.randn(3, 1))
