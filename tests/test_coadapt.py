import dataclasses
import json
import math
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

import plus.coadapt
from plus.artifacts import write_json
from plus.coadapt import CoadaptConfig, RolloutBatch, evaluate_plus, load_trained_summarizer, train_plus
from plus.models import load_causal_lm
from plus.reward_model import RewardModelConfig
from plus.schedules import cosine_schedule, cosine_with_warmup


class ByteRewardModel(nn.Module):
    """A tiny trainable reward model with the `SummaryRewardModel.score` interface: mean byte embeddings of the
    summary and the response, r = <e(z), e(y)> + w . e(y). It logs every call (mode, grad, summaries, a copy of
    its parameters) so the tests can see the order of the co-adaptation steps."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.summary = nn.EmbeddingBag(257, 8, mode="mean")
        self.response = nn.EmbeddingBag(257, 8, mode="mean")
        self.linear = nn.Linear(8, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
        self.calls: list[dict] = []

    @staticmethod
    def _bag(layer: nn.EmbeddingBag, texts: list[str]) -> torch.Tensor:
        ids = [[b + 1 for b in text.encode()] or [0] for text in texts]  # 0 marks an empty text
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        return layer(torch.tensor([b for i in ids for b in i]), offsets)  # (B, 8)

    def parameter_vector(self) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in self.parameters()]).clone()

    def score(self, summaries, prompts, responses):
        self.calls.append(
            {
                "training": self.training,
                "grad": torch.is_grad_enabled(),
                "summaries": list(summaries),
                "parameters": self.parameter_vector(),
            }
        )
        z = self._bag(self.summary, [s or "" for s in summaries])
        y = self._bag(self.response, list(responses))
        return (z * y).sum(-1) + self.linear(y).squeeze(-1)  # (B,)


def _records(n: int = 8) -> list[dict]:
    records = []
    for i in range(n):
        likes, dislikes = ("dogs", "cats") if i % 2 else ("cats", "dogs")
        pair = {"prompt": "A pet?", "chosen": f"I love {likes}.", "rejected": f"I love {dislikes}."}
        records.append(
            {
                "context": f"The user preferred a sentence about {likes} to one about {dislikes}.",
                "reward_prompt": pair["prompt"],
                "chosen": pair["chosen"],
                "rejected": pair["rejected"],
                "train_prompt": pair["prompt"],
                "train_chosen": pair["chosen"],
                "train_rejected": pair["rejected"],
                "eval_prompt": pair["prompt"],
                "eval_chosen": pair["chosen"],
                "eval_rejected": pair["rejected"],
                "user_id": likes,
                "split": "train" if i < n // 2 else "test",
            }
        )
    return records


def _config(**overrides) -> CoadaptConfig:
    values = dict(
        summarizer_model="tiny-chat-lm",
        reward_model=RewardModelConfig(backbone="tiny-encoder", max_length=64),
        rollout_batch_size=4,
        train_batch_size=2,
        micro_batch_size=2,
        max_summary_tokens=4,
        actor_lr=1e-3,
        critic_lr=1e-3,
        reward_lr=1e-2,
        warmup_ratio=0.0,
        num_episodes=1,
    )
    return CoadaptConfig(**(values | overrides))


def _policy_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(before: dict[str, torch.Tensor], model: nn.Module) -> bool:
    after = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in model.named_parameters()}
    return any(not torch.equal(before[n], after[n]) for n in before if n in after)


def test_reward_is_computed_before_the_rm_step_and_rm_trains_on_the_same_summaries(tmp_path):
    reward_model, initial = ByteRewardModel(), ByteRewardModel()  # `initial` is an identical copy that never trains
    seen: dict[int, tuple[list[dict], RolloutBatch]] = {}
    config = _config(separate_critic=False)
    record = lambda step, records, batch: seen.update({step: (records, batch)})  # noqa: E731
    train_plus(config, _records(), tmp_path, reward_model=reward_model, on_rollout=record)
    # The first rollout's reward is the clipped log sigmoid margin of the reward model before any update.
    records, batch = seen[0]
    summaries, rows = batch.summaries, [records[i] for i in batch.record_index]
    chosen = initial.score(summaries, [r["reward_prompt"] for r in rows], [r["chosen"] for r in rows])
    rejected = initial.score(summaries, [r["reward_prompt"] for r in rows], [r["rejected"] for r in rows])
    assert torch.allclose(batch.scores, F.logsigmoid(chosen - rejected).clamp(-10, 10).detach(), atol=1e-6)
    # Each step (4 rows, micro-batches of 2, train batches of 2): 2 eval/no-grad scoring calls, then 2 training
    # calls with gradients on exactly the same summaries, starting from the parameters that scored them.
    calls = reward_model.calls
    assert len(calls) == 2 * 4
    for step in range(2):
        scoring, training = calls[4 * step : 4 * step + 2], calls[4 * step + 2 : 4 * step + 4]
        assert all(not c["grad"] and not c["training"] for c in scoring)
        assert all(c["grad"] and c["training"] for c in training)
        half = [c["summaries"][: len(c["summaries"]) // 2] for c in scoring + training]  # chosen half of each call
        assert half[0] + half[1] == half[2] + half[3] == seen[step][1].summaries
        assert torch.equal(scoring[0]["parameters"], training[0]["parameters"])
        assert not torch.equal(training[0]["parameters"], training[1]["parameters"])  # the first update moved it
    assert not torch.equal(calls[0]["parameters"], calls[4]["parameters"])


def test_reward_epochs_repeat_the_rm_update_on_the_same_summaries(tmp_path):
    reward_model = ByteRewardModel()
    seen = {}
    config = _config(separate_critic=False, reward_epochs=3, max_steps=1)
    train_plus(config, _records(), tmp_path, reward_model=reward_model, on_rollout=lambda s, r, b: seen.update(b=b))
    calls = reward_model.calls  # 2 scoring calls, then 3 passes x 2 training calls
    assert len(calls) == 2 + 3 * 2
    for start in (2, 4, 6):
        pass_summaries = [c["summaries"][: len(c["summaries"]) // 2] for c in calls[start : start + 2]]
        assert pass_summaries[0] + pass_summaries[1] == seen["b"].summaries
    assert not torch.equal(calls[2]["parameters"], calls[7]["parameters"])


def _base_policy() -> dict[str, torch.Tensor]:
    return _policy_parameters(load_causal_lm("tiny-chat-lm", device="cpu")[0])


def test_ppo_loss_is_finite_and_both_models_change(tmp_path):
    reward_model = ByteRewardModel()
    before = reward_model.parameter_vector()
    result = train_plus(_config(), _records(), tmp_path, reward_model=reward_model)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    for key in ("losses/policy", "losses/value", "reward_model/loss", "summarizer/kl", "summarizer/entropy"):
        assert all(math.isfinite(row[key]) for row in rows), key
    for key in ("summarizer/reward", "summarizer/length", "reward_model/accuracy", "perf/tokens_per_second"):
        assert key in rows[0]
    # The random tiny model never writes the marker: every summary is flagged (here, cut off or marker-less).
    assert rows[0]["summarizer/no_marker_fraction"] + rows[0]["summarizer/empty_fraction"] == 1.0
    assert _changed(_base_policy(), result.policy)
    assert not torch.equal(before, reward_model.parameter_vector())
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "final" / "actor.safetensors").exists()
    loaded, _, written = load_trained_summarizer(tmp_path)
    assert written == _config() and not loaded.training
    trained = dict(result.policy.named_parameters())
    for name, parameter in loaded.named_parameters():
        assert torch.equal(parameter, trained[name].detach()), name
    rollouts = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 8 and {"step", "user_id", "summary", "status", "reward"} <= set(rollouts[0])


def test_coadapt_uses_the_one_cosine_schedule(tmp_path, monkeypatch):
    """Every optimizer gets `plus.schedules.cosine_schedule`, and the logged learning rate follows it."""
    built = []

    def spy(optimizer, num_steps, num_warmup):
        built.append((cosine_schedule(optimizer, num_steps, num_warmup), num_steps, num_warmup))
        return built[-1][0]

    monkeypatch.setattr(plus.coadapt.loop, "cosine_schedule", spy)
    config = _config(train_summarizer=False, warmup_ratio=0.5)
    train_plus(config, _records(4), tmp_path, reward_model=ByteRewardModel())
    assert len(built) == 1  # the reward model's optimizer, the only one of a frozen summarizer
    scheduler, num_steps, num_warmup = built[0]
    assert num_warmup == math.ceil(0.5 * num_steps) and scheduler.last_epoch > 0
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    expected = config.reward_lr * cosine_with_warmup(scheduler.last_epoch, num_steps, num_warmup)
    assert row["lr/reward_model"] == pytest.approx(expected)


def test_frozen_summarizer_switch_freezes_exactly_the_summarizer(tmp_path):
    reward_model = ByteRewardModel()
    before = reward_model.parameter_vector()
    result = train_plus(_config(train_summarizer=False), _records(4), tmp_path, reward_model=reward_model)
    assert not _changed(_base_policy(), result.policy)
    assert not torch.equal(before, reward_model.parameter_vector())
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert "losses/policy" not in row and "reward_model/loss" in row


def test_frozen_reward_model_switch_freezes_exactly_the_reward_model(tmp_path):
    reward_model = ByteRewardModel()
    before = reward_model.parameter_vector()
    result = train_plus(
        _config(train_reward_model=False, separate_critic=False), _records(4), tmp_path, reward_model=reward_model
    )
    assert _changed(_base_policy(), result.policy)
    assert torch.equal(before, reward_model.parameter_vector())
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert "losses/policy" in row and "reward_model/loss" not in row


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    small = dict(rollout_batch_size=2, train_batch_size=1, micro_batch_size=1)  # 2 optimizer steps per rollout
    config = _config(separate_critic=False, checkpoint_every=1, num_episodes=2, **small)  # 4 rollout batches
    whole = train_plus(config, _records(4), tmp_path / "whole", reward_model=ByteRewardModel())
    first = train_plus(config, _records(4), tmp_path / "split", reward_model=ByteRewardModel(), stop_after=2)
    assert first.num_steps == 2 and not (tmp_path / "split" / "final").exists()
    # Killed after logging step 3 and while writing its checkpoint: a half-written actor, no state.json yet.
    split = tmp_path / "split"
    for log in ("metrics.jsonl", "rollouts.jsonl"):
        step_two = [json.loads(row) for row in (split / log).read_text().splitlines() if '"step": 2' in row]
        with (split / log).open("a") as handle:
            handle.writelines(json.dumps({**row, "step": 3}) + "\n" for row in step_two)
    (split / "checkpoint.incoming").mkdir()
    (split / "checkpoint.incoming" / "actor.safetensors").write_bytes(b"\x00" * 10)
    resumed_rm = ByteRewardModel()
    resumed = train_plus(config, _records(4), tmp_path / "split", reward_model=resumed_rm)
    assert resumed.num_steps == 4
    whole_policy = dict(whole.policy.named_parameters())
    for name, parameter in resumed.policy.named_parameters():
        assert torch.equal(parameter, whole_policy[name]), name
    assert torch.equal(resumed_rm.parameter_vector(), whole.reward_model.parameter_vector())
    read = lambda path: [json.loads(line) for line in path.read_text().splitlines()]  # noqa: E731
    drop_time = lambda rows: [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]  # noqa: E731
    assert drop_time(read(tmp_path / "whole" / "metrics.jsonl")) == drop_time(
        read(tmp_path / "split" / "metrics.jsonl")
    )
    assert [row["step"] for row in read(split / "metrics.jsonl")] == [1, 2, 3, 4]
    assert len(read(split / "rollouts.jsonl")) == len(read(tmp_path / "whole" / "rollouts.jsonl"))
    assert sorted(p.name for p in split.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint"]


def test_a_checkpoint_left_between_its_two_renames_is_resumed(tmp_path):
    config = _config(separate_critic=False, checkpoint_every=1)
    train_plus(config, _records(), tmp_path, reward_model=ByteRewardModel(), stop_after=1)
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.previous")  # killed before the second rename
    resumed = train_plus(config, _records(), tmp_path, reward_model=ByteRewardModel())
    assert resumed.num_steps == 2
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resuming_with_other_records_is_a_clear_error(tmp_path):
    config = _config(separate_critic=False, checkpoint_every=1)
    train_plus(config, _records(), tmp_path, reward_model=ByteRewardModel(), stop_after=1)
    other = [dict(record, train_chosen=record["train_chosen"] + " (edited)") for record in _records()]
    with pytest.raises(ValueError, match="other training records"):
        train_plus(config, other, tmp_path, reward_model=ByteRewardModel())
    assert (tmp_path / "checkpoint" / "state.json").exists()


def test_resuming_under_another_config_is_a_clear_error(tmp_path):
    config = _config(separate_critic=False, checkpoint_every=1)
    train_plus(config, _records(), tmp_path, reward_model=ByteRewardModel(), stop_after=1)
    with pytest.raises(ValueError, match="differs in actor_lr"):
        train_plus(dataclasses.replace(config, actor_lr=0.5), _records(), tmp_path, reward_model=ByteRewardModel())
    assert (tmp_path / "checkpoint" / "state.json").exists()  # nothing written is lost
    resumed = train_plus(dataclasses.replace(config, checkpoint_every=0), _records(), tmp_path, ByteRewardModel())
    assert resumed.num_steps == 2


@pytest.mark.slow
def test_rloo_with_lora_trains_only_the_adapters(tmp_path):
    config = _config(estimator="rloo", num_samples=2, lora=True, lora_rank=2, actor_lr=1e-2)
    result = train_plus(config, _records(4), tmp_path, reward_model=ByteRewardModel())
    trainable = {n for n, p in result.policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not _changed(_base_policy(), result.policy)  # the base weights stay put ...
    lora_b = [p for n, p in result.policy.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # ... while the adapters (B starts at zero) moved
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(row["losses/policy"]) for row in rows) and "losses/value" not in rows[0]


def test_rollout_log_probs_are_those_of_the_tempered_sampling_distribution(tmp_path):
    from plus.summarizer import response_logits, token_logprobs

    seen = {}
    config = _config(separate_critic=False, temperature=0.5, max_steps=1)
    train_plus(
        config, _records(4), tmp_path, reward_model=ByteRewardModel(), on_rollout=lambda s, r, b: seen.update(b=b)
    )
    batch = seen["b"]
    base, _ = load_causal_lm("tiny-chat-lm", device="cpu")  # the policy before its first update
    tensors = (batch.query_ids, batch.query_mask, batch.response_ids, batch.response_mask)
    with torch.no_grad():
        logits, _ = response_logits(base, *tensors)
    mask = batch.response_mask.float()
    tempered = token_logprobs(logits / 0.5, batch.response_ids) * mask
    assert torch.allclose(batch.logprobs, tempered, atol=1e-5)
    assert not torch.allclose(batch.logprobs, token_logprobs(logits, batch.response_ids) * mask, atol=1e-3)


@pytest.mark.parametrize("estimator", ["ppo", "rloo"])
def test_the_summarizer_update_moves_log_probs_the_way_the_advantages_point(tmp_path, estimator):
    """One small step must raise sum_t A_t log pi(token_t): the summaries the reward favours become likelier. A
    flipped sign anywhere between the reward and the policy loss makes this sum negative."""
    from plus.summarizer import response_logits, token_logprobs

    seen = {}
    config = _config(estimator=estimator, num_samples=2, separate_critic=False, actor_lr=1e-4, max_steps=1)
    result = train_plus(
        config, _records(4), tmp_path, reward_model=ByteRewardModel(), on_rollout=lambda s, r, b: seen.update(b=b)
    )
    batch = seen["b"]
    tensors = (batch.query_ids, batch.query_mask, batch.response_ids, batch.response_mask)
    with torch.no_grad():
        logits, _ = response_logits(result.policy, *tensors)
    mask = batch.response_mask.float()
    moved = (token_logprobs(logits / config.temperature, batch.response_ids) * mask - batch.logprobs) * mask
    assert batch.advantages.abs().sum() > 0
    assert (batch.advantages * moved).sum() > 0


def test_lora_top_layers_adapts_only_the_top_blocks(tmp_path):
    config = _config(estimator="rloo", num_samples=2, lora=True, lora_rank=2, lora_top_layers=1, max_steps=1)
    result = train_plus(config, _records(4), tmp_path, reward_model=ByteRewardModel())
    depth = result.policy.config.num_hidden_layers
    trainable = [n for n, p in result.policy.named_parameters() if p.requires_grad]
    assert trainable and all(f"layers.{depth - 1}." in n for n in trainable)
    with pytest.raises(ValueError, match="lora_top_layers"):
        train_plus(dataclasses.replace(config, lora_top_layers=depth + 1), _records(4), tmp_path / "deep")


def test_evaluation_writes_summaries_and_accuracy_per_split(tmp_path):
    policy, tokenizer = load_causal_lm("tiny-chat-lm", device="cpu")
    records = _records()
    accuracy = evaluate_plus(policy, tokenizer, ByteRewardModel(), records, 4, output_dir=tmp_path, name="toy")
    assert set(accuracy) == {
        f"{m}/{s}" for m in ("sampled", "greedy") for s in ("train", "test", "bad_summary_fraction")
    }
    assert all(0 <= v <= 1 for v in accuracy.values())
    lines = (tmp_path / "summaries-toy-greedy.jsonl").read_text().splitlines()
    assert len(lines) == len(records) and {"summary", "status", "margin", "correct"} <= set(json.loads(lines[0]))
    assert json.loads((tmp_path / "accuracy-toy.json").read_text()) == pytest.approx(accuracy)


def test_rollout_select_trims_padding_columns():
    batch = RolloutBatch(
        record_index=[0, 1],
        summaries=["a", "b"],
        statuses=["ok", "ok"],
        query_ids=torch.tensor([[0, 0, 5], [0, 6, 7]]),
        query_mask=torch.tensor([[0, 0, 1], [0, 1, 1]]),
        response_ids=torch.tensor([[1, 2, 0], [3, 0, 0]]),
        response_mask=torch.tensor([[1, 1, 0], [1, 0, 0]]),
        scores=torch.zeros(2),
        margins=torch.zeros(2),
    )
    part = batch.select([1])
    assert part.query_ids.tolist() == [[6, 7]] and part.response_ids.tolist() == [[3]] and part.summaries == ["b"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"estimator": "a2c"}, "estimator"),
        ({"rollout_batch_size": 6, "train_batch_size": 4}, "multiple"),
        ({"estimator": "rloo", "num_samples": 1}, "num_samples"),
        ({"lam": 1.5}, "lam"),
        ({"actor_lr": 0.0}, "actor_lr"),
        ({"lora_top_layers": 0}, "lora_top_layers"),
        ({"summary_prefix": "This user prefers", "prefill_marker": False}, "summary_prefix"),
        ({"kl_coef": float("nan")}, "kl_coef must be a finite number"),
        ({"actor_lr": float("inf")}, "actor_lr must be a finite number"),
        ({"reward_clip": "10"}, "reward_clip must be a finite number, got '10'"),
        ({"micro_batch_size": 2.0}, "micro_batch_size must be a finite int"),
        ({"adam_betas": (1.5, -1)}, "adam_betas"),
        ({"seed": "0"}, "seed must be a finite int"),
        ({"summarizer_model": ""}, "summarizer_model must name a model"),
    ],
)
def test_bad_config_is_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_config_round_trips_through_json():
    config = _config(lora=True)
    assert CoadaptConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(config)))) == config


def test_a_record_missing_a_field_is_named(tmp_path):
    records = _records()
    del records[3]["train_chosen"]
    with pytest.raises(ValueError, match="record 3: field 'train_chosen'"):
        train_plus(_config(), records, tmp_path, reward_model=ByteRewardModel())


def test_a_trained_summarizer_is_loaded_only_when_it_was_kept(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json: the run .* did not finish"):
        load_trained_summarizer(tmp_path)
    (tmp_path / "final").mkdir()
    write_json(tmp_path / "final" / "config.json", asdict(_config(train_summarizer=False)))
    with pytest.raises(ValueError, match="kept its summarizer frozen"):
        load_trained_summarizer(tmp_path)
    write_json(tmp_path / "final" / "config.json", asdict(_config()))
    with pytest.raises(FileNotFoundError, match="actor.safetensors is missing"):
        load_trained_summarizer(tmp_path)
    save_file({"not.a.parameter": torch.zeros(1)}, str(tmp_path / "final" / "actor.safetensors"))
    with pytest.raises(ValueError, match="actor.safetensors: Checkpoint does not match the model"):
        load_trained_summarizer(tmp_path)


@pytest.mark.parametrize(
    "loss_name, quantity",
    [("ppo_policy_loss", "the summarizer's policy loss"), ("bradley_terry_loss", "the reward model's loss")],
)
def test_a_nan_loss_stops_the_run_naming_the_batch_and_keeping_the_last_checkpoint(
    tmp_path, monkeypatch, loss_name, quantity
):
    config = _config(separate_critic=False, checkpoint_every=1, num_episodes=2)
    train_plus(config, _records(), tmp_path, reward_model=ByteRewardModel(), stop_after=1)
    saved = (tmp_path / "checkpoint").stat().st_mtime_ns, (tmp_path / "metrics.jsonl").read_text()
    real = getattr(plus.coadapt.loop, loss_name)

    def poisoned(*args, **kwargs):
        result = real(*args, **kwargs)
        first = result[0] if isinstance(result, tuple) else result
        nan = first * float("nan")
        return (nan, *result[1:]) if isinstance(result, tuple) else nan

    monkeypatch.setattr(plus.coadapt.loop, loss_name, poisoned)
    with pytest.raises(FloatingPointError, match=rf"rollout batch 2: {quantity} is not finite.*rollout batch 1"):
        train_plus(config, _records(), tmp_path, reward_model=ByteRewardModel())
    assert ((tmp_path / "checkpoint").stat().st_mtime_ns, (tmp_path / "metrics.jsonl").read_text()) == saved
