import json
import logging
import math

import pytest
import torch
from toy_users import LIKES, PROMPT, mirrored_test_records, toy_records

from plus.baselines import (
    METHOD_NAMES,
    PAL,
    VPL,
    BaselineConfig,
    TextEmbedder,
    build_method,
    summarize_contexts,
)
from plus.evaluation import pairwise_accuracy
from plus.models import ModelNotAvailableError
from plus.reward_model import RewardModelConfig
from plus.train import TrainConfig, seed_everything, train_reward_model


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder("tiny-encoder")


def make(method: str, embedder: TextEmbedder, **changes):
    seed_everything(0)
    config = BaselineConfig(
        method=method,
        reward_model=RewardModelConfig(backbone="tiny-chat-lm", max_length=256),
        embedding_model="tiny-encoder",
        **changes,
    )
    summaries = {r["context"]: f"This user loves {LIKES[r['user_id']][0]}s." for r in toy_records(8, 0)}
    return build_method(config, embedder=embedder, summaries=summaries)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_scores_through_one_interface(method, embedder):
    records = toy_records(4, 0)
    model = make(method, embedder)
    model.prepare(records)
    rewards = model.rewards(records, [PROMPT] * 4, ["Dogs."] * 4)
    assert rewards.shape == (4,) and torch.isfinite(rewards).all()
    loss, metrics = model.loss(records, progress=0.5)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None for group in model.parameter_groups().values() for p in group)
    assert "train/accuracy" in metrics


def test_bt_loss_of_equal_rewards_is_log2(embedder):
    model = make("btl", embedder)
    with torch.no_grad():
        model.model.head.weight.zero_()  # every reward is the (zero) bias: chosen and rejected tie
    loss, _ = model.loss(toy_records(6, 0))
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6)


def test_btl_ignores_the_user_and_conditioned_methods_do_not(embedder):
    dog_fan, cat_fan = toy_records(2, 0)
    for method in METHOD_NAMES:
        model = make(method, embedder).eval()
        model.prepare([dog_fan, cat_fan])
        with torch.no_grad():
            rewards = model.rewards([dog_fan, cat_fan], [PROMPT] * 2, ["Dogs."] * 2)
        # The same input at another batch position may differ in the last bits (padding, kernels): compare within
        # a tolerance, both ways.
        if method in ("btl", "dpl"):
            assert torch.isclose(rewards[0], rewards[1]), method
        else:
            assert not torch.isclose(rewards[0], rewards[1]), method


def test_missing_inputs_name_the_record(embedder):
    record = toy_records(1, 0)[0]
    with pytest.raises(ValueError, match="record 0 .*description"):
        make("oracle", embedder).rewards([{**record, "ground_truth": None}], [PROMPT], ["Dogs."])
    with pytest.raises(KeyError, match="record 0 .*no cached summary"):
        make("plus-untrained", embedder).rewards([{**record, "context": "unseen"}], [PROMPT], ["Dogs."])
    with pytest.raises(ValueError, match="record 0 .*context_pairs"):
        make("vpl", embedder).rewards([{**record, "context_pairs": []}], [PROMPT], ["Dogs."])
    with pytest.raises(ValueError, match="method"):
        BaselineConfig(method="gpt")


def test_vpl_kl_weight_is_annealed_from_zero(embedder):
    model = make("vpl", embedder, kl_weight=1e-2, kl_anneal_fraction=0.5)
    assert isinstance(model, VPL)
    records = toy_records(4, 0)
    weights = [model.loss(records, progress)[1]["train/kl_weight"] for progress in (0.0, 0.25, 0.5, 0.9)]
    assert weights == pytest.approx([0.0, 5e-3, 1e-2, 1e-2])


def test_vpl_uses_the_posterior_mean_at_evaluation(embedder):
    model = make("vpl", embedder).eval()
    records = toy_records(2, 0)
    first = model.rewards(records, [PROMPT] * 2, ["Dogs."] * 2)
    assert torch.equal(first, model.rewards(records, [PROMPT] * 2, ["Dogs."] * 2))


def test_pal_new_user_learns_only_its_mixture_weights(embedder):
    model = make("pal", embedder)
    assert isinstance(model, PAL)
    train = toy_records(8, 0)
    model.prepare(train)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    newcomer = {**toy_records(1, 5)[0], "user_id": "stranger"}
    with pytest.raises(KeyError, match="adapt"):
        model.rewards([newcomer], [PROMPT], ["Dogs."])
    with torch.no_grad():  # evaluation adapts under no_grad: fitting must still work
        model.adapt([newcomer])
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())
    assert model.rewards([newcomer], [PROMPT], ["Dogs."]).shape == (1,)
    assert not torch.equal(model.weights_for([newcomer]), torch.zeros(1, model.config.num_prototypes))


def test_the_embedder_counts_the_texts_it_cuts(caplog):
    embedder = TextEmbedder("tiny-encoder", max_length=16)
    long = "I love dogs. " * 10
    with caplog.at_level(logging.WARNING, logger="plus.baselines"):
        embedder.embed(["Dogs.", long, long])
        assert embedder.truncation_counts == {"texts": 2, "truncated": 1}  # distinct texts
        embedder.embed([long, long + "Cats."])  # the cached one is not counted again
    assert embedder.truncation_counts == {"texts": 3, "truncated": 2}
    assert [r.message.startswith("A text was truncated") for r in caplog.records] == [True]  # warned once
    # Cut to 16 tokens, the two long texts embed alike (in different batches: up to rounding), which the count reveals.
    torch.testing.assert_close(embedder.embed([long])[0], embedder.embed([long + "Cats."])[0])


def test_summary_cache_generates_each_context_once(tmp_path):
    calls: list[list[str]] = []

    def summarize(contexts: list[str]) -> list[str]:
        calls.append(list(contexts))
        return [f"summary of {c}" for c in contexts]

    path = tmp_path / "summaries.jsonl"
    first = summarize_contexts(["a", "b", "a", "c"], summarize, path, "model", "instr", batch_size=2)
    assert first == {"a": "summary of a", "b": "summary of b", "c": "summary of c"}
    assert calls == [["a", "b"], ["c"]]
    again = summarize_contexts(["c", "a", "d"], summarize, path, "model", "instr")
    assert again["d"] == "summary of d" and calls[-1] == ["d"]  # only the new context is generated
    summarize_contexts(["a"], summarize, path, "other-model", "instr")
    assert calls[-1] == ["a"]  # another summarizer is another cache entry
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 5 and all(set(row) == {"key", "model", "summary"} for row in rows)


# Which methods should learn the toy users' contested pairs; btl and dpl see no user information.
LEARNS_CONTESTED = {"icl", "oracle", "plus-untrained", "vpl", "pal"}


@pytest.fixture(scope="module")
def minilm() -> TextEmbedder:
    """Tiny random encoders embed all short texts almost alike (cosine ~0.98), so learning toy users needs the
    offline pretrained MiniLM (skipped where its package is missing)."""
    try:
        return TextEmbedder("all-minilm-l6-v2")
    except ModelNotAvailableError as error:
        pytest.skip(str(error))


@pytest.mark.slow
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_each_method_learns_toy_users_where_it_should(method, minilm):
    train, test = toy_records(64, 0), mirrored_test_records()
    seed_everything(0)
    config = BaselineConfig(
        method=method,
        reward_model=RewardModelConfig(backbone="all-minilm-l6-v2", max_length=64, num_trainable_layers=2),
        embedding_model="all-minilm-l6-v2",
    )
    summaries = {r["context"]: f"This user loves {LIKES[r['user_id']][0]}s." for r in train + test}
    model = build_method(config, embedder=minilm, summaries=summaries)
    # VPL and PAL train small networks from scratch: more epochs, same lr. VPL's posterior sometimes collapses
    # (exactly 0.5 on contested pairs): measured at lr 1e-3, 30 epochs at seeds 0 and 1, 3e-3 at seed 1 (30
    # epochs) and seed 0 (60); 1e-3 for 60 epochs learned at seeds 0, 1 and 2.
    epochs = 60 if method in ("vpl", "pal") else 5
    config = TrainConfig(
        batch_size=8, num_epochs=epochs, learning_rate=1e-3, head_learning_rate=1e-3, progress_bar=False
    )
    train_reward_model(model, train, config)
    result = pairwise_accuracy(model, test)
    assert result["agreed_accuracy"] == 1.0, (method, result)
    if method in LEARNS_CONTESTED:
        assert result["contested_accuracy"] >= 0.8, (method, result)  # a user-blind model gets exactly 0.5
    else:
        assert result["contested_accuracy"] == 0.5, (method, result)  # mirrored pairs: exactly one of two right


@pytest.mark.parametrize("method", ["btl", "vpl"])
def test_a_build_is_the_same_whatever_the_callers_rng(method, embedder):
    config = BaselineConfig(
        method=method,
        reward_model=RewardModelConfig(backbone="tiny-chat-lm", max_length=256),
        embedding_model="tiny-encoder",
    )
    torch.manual_seed(1)
    first = build_method(config, embedder=embedder).state_dict()
    after_first = torch.rand(1)  # the build left the caller's stream where it was
    torch.manual_seed(2)
    second = build_method(config, embedder=embedder).state_dict()
    other_seed = build_method(config, embedder=embedder, seed=1).state_dict()
    torch.manual_seed(1)
    assert torch.equal(torch.rand(1), after_first)
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert any(not torch.equal(first[name], other_seed[name]) for name in first)


@pytest.mark.parametrize(
    "field, value",
    [("kl_weight", float("nan")), ("kl_weight", "0.1"), ("kl_anneal_fraction", 0.0), ("adapt_steps", float("nan")),
     ("adapt_steps", 2.5), ("adapt_learning_rate", float("inf")), ("hidden_dim", True), ("embedding_model", "")],
)  # fmt: skip
def test_baseline_config_refuses_nan_inf_strings_and_out_of_range_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"BaselineConfig.{field} must be"):
        BaselineConfig("vpl", **{field: value})


def test_icl_redraws_training_contexts_within_the_user_never_showing_the_target(embedder):
    from plus.data.registry import build_dataset

    train = [r for r in build_dataset("pets", seed=0, num_train=32, num_test=4) if r["split"] == "train"]
    icl = make("icl", embedder)
    icl.prepare(train)
    seen = []
    icl.model.score = lambda conditions, prompts, responses: (seen.append(conditions), torch.zeros(len(prompts)))[1]
    icl.train()
    icl.pair_rewards(train, "train")
    drawn, n = seen[-1], len(train)
    assert drawn[:n] == drawn[n:]  # one context per record, for both of its responses
    for record, context in zip(train, drawn[:n], strict=True):
        assert context in {r["context"] for r in train if r["user_id"] == record["user_id"]}
        assert record["train_chosen"] not in context and record["train_rejected"] not in context
    assert sum(c != r["context"] for c, r in zip(drawn, train, strict=False)) > n // 2
    icl.pair_rewards(train, "eval")  # a held-out pair is scored with the record's own context
    assert seen[-1][:n] == [r["context"] for r in train]
    icl.eval()
    icl.pair_rewards(train, "train")
    assert seen[-1][:n] == [r["context"] for r in train]
