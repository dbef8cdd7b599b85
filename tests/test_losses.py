import math

import torch

from plus.losses import bradley_terry_loss, dpl_loss


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
