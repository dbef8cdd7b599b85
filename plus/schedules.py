"""The learning-rate schedule of every trainer (`plus.train` and `plus.coadapt`): linear warm-up, cosine decay."""

from __future__ import annotations

import functools
import math

import torch


def cosine_with_warmup(step: int, num_steps: int, num_warmup: int) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up over ``num_warmup`` steps, (step + 1) /
    num_warmup, so the first step already learns and step num_warmup - 1 reaches 1; then cosine decay to 0 at
    ``num_steps`` (and 0 after it).

    transformers' ``get_cosine_schedule_with_warmup`` starts at step / num_warmup instead: its first step has
    learning rate 0."""
    if step < num_warmup:
        return (step + 1) / num_warmup
    progress = (step - num_warmup) / max(1, num_steps - num_warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def cosine_schedule(
    optimizer: torch.optim.Optimizer, num_steps: int, num_warmup: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` over ``optimizer`` following `cosine_with_warmup` (stepped once per optimizer step)."""
    multiplier = functools.partial(cosine_with_warmup, num_steps=num_steps, num_warmup=num_warmup)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
