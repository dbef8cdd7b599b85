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
