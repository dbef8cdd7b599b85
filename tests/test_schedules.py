import pytest
import torch

from plus.schedules import cosine_schedule, cosine_with_warmup


def test_cosine_schedule_warms_up_then_decays_to_zero():
    values = [cosine_with_warmup(step, 20, 4) for step in range(21)]
    assert values[0] == pytest.approx(0.25)  # the first step already learns (transformers' schedule gives 0)
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # the warm-up ends at 1 on its last step
    assert values[4] == pytest.approx(1.0)  # the decay starts from the peak
    assert values[12] == pytest.approx(0.5)  # half way through the decay
    assert values[20] == pytest.approx(0.0) and cosine_with_warmup(25, 20, 4) == pytest.approx(0.0)  # the end
    assert all(a >= b for a, b in zip(values[4:], values[5:], strict=False))  # non-increasing after warm-up
    assert cosine_with_warmup(0, 10, 0) == pytest.approx(1.0)  # no warm-up: start at the peak


def test_the_lambda_scheduler_follows_the_function():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = cosine_schedule(optimizer, num_steps=10, num_warmup=3)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([2.0 * cosine_with_warmup(step, 10, 3) for step in range(10)])
