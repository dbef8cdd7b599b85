import json
import math
from dataclasses import replace

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from toy_users import mirrored_test_records, toy_records

from plus.artifacts import read_metrics
from plus.baselines import METHOD_NAMES, BaselineConfig, TextEmbedder, build_method, load_method
from plus.reward_model import RewardModelConfig
from plus.train import TrainConfig, seed_everything, train_reward_model

CONFIG = TrainConfig(batch_size=4, learning_rate=1e-3, head_learning_rate=1e-3, warmup_ratio=0.3, progress_bar=False)


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder("tiny-encoder")


def fresh(method: str, embedder: TextEmbedder, seed: int = 0):
    seed_everything(seed)
    config = BaselineConfig(
        method=method,
        reward_model=RewardModelConfig(backbone="tiny-chat-lm", max_length=256),
        embedding_model="tiny-encoder",
    )
    summaries = {r["context"]: f"summary {i}" for i, r in enumerate(toy_records(16, 0) + mirrored_test_records())}
    return build_method(config, embedder=embedder, summaries=summaries)


def test_training_changes_parameters_and_writes_metrics(embedder, tmp_path):
    model = fresh("btl", embedder)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = train_reward_model(model, toy_records(16, 0), CONFIG, output_dir=tmp_path)
    assert result.num_steps == 4 and len(result.metrics) == 4
    assert all(math.isfinite(row["losses/total"]) for row in result.metrics)
    assert any(not torch.equal(before[name], p) for name, p in model.named_parameters())
    assert not torch.equal(before["model.head.weight"], model.model.head.weight)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows == result.metrics
    assert {"step", "losses/total", "losses/bt", "train/accuracy", "train/grad_norm", "train/lr"} <= set(rows[0])
    assert rows[0]["train/lr"] < rows[1]["train/lr"]  # warmup
    files = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert files == ["config.json", "manifest.json", "model.safetensors"]  # safetensors + JSON, no pickles
    assert json.loads((tmp_path / "checkpoint" / "config.json").read_text())["config"]["method"] == "btl"


def test_gradients_are_clipped(embedder):
    model = fresh("btl", embedder)
    seen = []

    def spy(optimizer, *args, **kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        seen.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    handle = register_optimizer_step_pre_hook(spy)
    try:
        config = TrainConfig(batch_size=4, learning_rate=1.0, head_learning_rate=1.0, max_grad_norm=1e-3)
        result = train_reward_model(model, toy_records(8, 0), config)
    finally:
        handle.remove()
    assert max(row["train/grad_norm"] for row in result.metrics) > 1e-3  # the raw norm is reported ...
    assert max(seen) <= 1e-3 * (1 + 1e-4)  # ... and the optimiser only sees the clipped gradient


@pytest.mark.parametrize("method", ["btl", "vpl"])
def test_same_seed_gives_identical_metrics(method, embedder, tmp_path):
    runs = []
    for attempt in range(2):
        model = fresh(method, embedder, seed=3)
        result = train_reward_model(model, toy_records(12, 0), CONFIG, output_dir=tmp_path / str(attempt))
        with torch.no_grad():
            chosen, rejected = model.pair_rewards(mirrored_test_records())
        runs.append((result.metrics, chosen, rejected))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1]) and torch.equal(runs[0][2], runs[1][2])
    other = train_reward_model(fresh(method, embedder, seed=4), toy_records(12, 0), replace(CONFIG, seed=4))
    assert other.metrics != runs[0][0]  # the seed matters (the test can fail)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_checkpoint_reloads_to_identical_scores(method, embedder, tmp_path):
    model = fresh(method, embedder)
    result = train_reward_model(model, toy_records(8, 0), CONFIG, output_dir=tmp_path)
    test = [{**r, "user_id": "new-" + r["user_id"]} for r in mirrored_test_records()] + mirrored_test_records()
    model.eval()
    model.adapt(test)
    loaded = load_method(result.checkpoint, embedder=embedder).eval()
    loaded.adapt(test)
    with torch.no_grad():
        assert torch.equal(torch.stack(model.pair_rewards(test)), torch.stack(loaded.pair_rewards(test)))


@pytest.mark.parametrize(
    "field, value",
    [("learning_rate", float("nan")), ("learning_rate", "1e-3"), ("head_learning_rate", float("inf")),
     ("batch_size", 0), ("num_epochs", 1.5), ("warmup_ratio", 1.0), ("beta2", float("nan")), ("weight_decay", -1),
     ("seed", "0"), ("max_grad_norm", True)],
)  # fmt: skip
def test_train_config_refuses_nan_inf_strings_and_out_of_range_values_naming_the_field(field, value):
    from plus.train import TrainConfig

    with pytest.raises(ValueError, match=f"TrainConfig.{field} must be"):
        TrainConfig(**{field: value})


def test_a_nan_loss_stops_training_naming_the_step_before_anything_of_it_is_written(embedder, tmp_path):
    model = fresh("btl", embedder)
    real = model.loss
    calls = []

    def poisoned(batch, progress):
        loss, metrics = real(batch, progress=progress)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 2 else loss), metrics

    model.loss = poisoned
    with pytest.raises(FloatingPointError, match=r"stopped at step 1 of 4: the loss is nan"):
        train_reward_model(model, toy_records(16, 0), CONFIG, output_dir=tmp_path)
    assert [row["step"] for row in read_metrics(tmp_path / "metrics.jsonl")] == [0]
    assert not (tmp_path / "checkpoint").exists()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_damaged_final_checkpoint_is_refused_naming_the_file(embedder, tmp_path):
    result = train_reward_model(fresh("btl", embedder), toy_records(8, 0), CONFIG, output_dir=tmp_path)
    weights = result.checkpoint / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"Cannot load the checkpoint in {result.checkpoint}: {weights} has"):
        load_method(result.checkpoint, embedder=embedder)
