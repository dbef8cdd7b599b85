import pytest
import torch

from plus.reward_model import FrozenFeatureCache, RewardModelConfig, SummaryRewardModel, build_reward_input

BACKBONES = ["tiny-chat-lm", "tiny-encoder"]


@pytest.fixture(scope="module", params=BACKBONES)
def model(request) -> SummaryRewardModel:
    torch.manual_seed(0)
    return SummaryRewardModel(RewardModelConfig(backbone=request.param, max_length=256)).eval()


def test_changing_the_summary_changes_the_reward(model):
    prompts, responses = ["Tell me about a pet."] * 2, ["Dogs love long walks."] * 2
    with torch.no_grad():
        rewards = model.score(["The user loves dogs.", "The user is afraid of dogs."], prompts, responses)
    assert rewards.shape == (2,)
    assert not torch.isclose(rewards[0], rewards[1])


def test_score_is_invariant_to_padding(model):
    """A short input scores the same alone and beside a longer one (pooling ignores pad positions)."""
    with torch.no_grad():
        alone = model.score(["likes cats"], ["Hi"], ["Cats."])
        batched = model.score(["likes cats", "a much longer summary " * 4], ["Hi", "Hello there"], ["Cats.", "Dogs!"])
    assert torch.allclose(alone, batched[:1], atol=1e-5)


def test_pooling_follows_the_backbone(model):
    assert model.pooling == ("last" if model.config.backbone == "tiny-chat-lm" else "mean")
    assert model.chat == (model.config.backbone == "tiny-chat-lm")


def test_prompt_with_role_words_stays_one_user_turn():
    model = SummaryRewardModel(RewardModelConfig(backbone="tiny-chat-lm", max_length=512))
    prompt = "User: what is 2+2?\nAssistant: 5\nUser: is that right?"
    item = build_reward_input("likes maths", prompt, "No, it is 4.", model.tokenizer, 512)
    text = model.tokenizer.decode(item.input_ids)
    assert text.count("<|im_start|>user") == 1
    assert text.count("<|im_start|>assistant") == 1
    assert prompt in text
    assert text.endswith("No, it is 4.<|im_end|>")  # the reward is read at the end-of-turn token


def test_summary_precedes_prompt_in_the_first_user_turn():
    model = SummaryRewardModel(RewardModelConfig(backbone="tiny-chat-lm"))
    text = model.tokenizer.decode(build_reward_input("SUMMARY", "PROMPT", "RESPONSE", model.tokenizer, 512).input_ids)
    user_turn = text.split("<|im_start|>assistant")[0]
    assert user_turn.index("SUMMARY") < user_turn.index("PROMPT")
    assert "RESPONSE" in text.split("<|im_start|>assistant")[1]


def test_frozen_cache_gives_the_same_rewards_and_trains_only_the_top():
    torch.manual_seed(0)
    model = SummaryRewardModel(RewardModelConfig(backbone="tiny-encoder", num_trainable_layers=1)).eval()
    summaries, prompts = ["likes dogs", None, "a much longer summary of this user"], ["p1", "p2 is longer", "p3"]
    responses = ["short", "a longer response here", "mid one"]
    plain = model.score(summaries, prompts, responses).detach()
    cache = FrozenFeatureCache()
    model.use_frozen_cache(cache)
    first = model.score(summaries, prompts, responses).detach()
    again = model.score(summaries[::-1], prompts[::-1], responses[::-1]).detach().flip(0)  # other padding
    torch.testing.assert_close(first, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, plain, atol=1e-5, rtol=1e-5)
    assert (len(cache), cache.misses, cache.hits) == (3, 3, 3)
    model.train()
    model.score(summaries, prompts, responses).sum().backward()
    blocks = model.backbone.encoder.layer
    assert all(p.grad is not None for p in blocks[-1].parameters())
    assert all(p.grad is None for p in blocks[0].parameters())
    # Another model on the same backbone and depth shares it; a different depth or a decoder is refused.
    SummaryRewardModel(RewardModelConfig(backbone="tiny-encoder", num_trainable_layers=1)).use_frozen_cache(cache)
    with pytest.raises(ValueError, match="holds states of"):
        SummaryRewardModel(RewardModelConfig(backbone="tiny-encoder", num_trainable_layers=0)).use_frozen_cache(cache)
    with pytest.raises(ValueError, match="needs frozen blocks"):
        SummaryRewardModel(RewardModelConfig(backbone="tiny-encoder")).use_frozen_cache(FrozenFeatureCache())
    with pytest.raises(ValueError, match="BERT-family"):
        decoder = SummaryRewardModel(RewardModelConfig(backbone="tiny-chat-lm", num_trainable_layers=1))
        decoder.use_frozen_cache(FrozenFeatureCache())


@pytest.mark.parametrize("backbone", BACKBONES)
def test_truncation_cuts_the_context_first_and_counts_it(backbone):
    model = SummaryRewardModel(RewardModelConfig(backbone=backbone, max_length=160))
    response = "The response must survive intact."
    item = build_reward_input("context " * 100, "A short prompt.", response, model.tokenizer, 160)
    text = model.tokenizer.decode(item.input_ids)
    assert len(item.input_ids) <= 160
    assert item.truncated == {"context"}
    assert response in text and "A short prompt." in text
    model.score(["context " * 100, "short"], ["A short prompt."] * 2, [response] * 2)
    assert model.truncation_counts["inputs"] == 2 and model.truncation_counts["context"] == 1
    assert model.truncation_counts["response"] == 0


def test_prompt_is_cut_from_its_start_before_the_response():
    model = SummaryRewardModel(RewardModelConfig(backbone="tiny-chat-lm"))
    prompt = "old words " * 40 + "THE QUESTION?"
    item = build_reward_input("summary", prompt, "THE ANSWER.", model.tokenizer, 100)
    text = model.tokenizer.decode(item.input_ids)
    assert item.truncated == {"context", "prompt"}
    assert "THE QUESTION?" in text and "THE ANSWER." in text


def test_response_is_cut_only_when_it_alone_does_not_fit_and_is_counted(caplog):
    model = SummaryRewardModel(RewardModelConfig(backbone="tiny-chat-lm", max_length=80))
    model.score(["s"], ["p"], ["long response " * 20])
    assert model.truncation_counts["response"] == 1
    assert "truncated" in caplog.text


def test_head_is_initialised_on_purpose():
    torch.manual_seed(0)
    model = SummaryRewardModel(RewardModelConfig(backbone="tiny-chat-lm"))
    expected = 1 / (model.hidden_size + 1) ** 0.5
    assert torch.all(model.head.bias == 0)
    assert 0.7 * expected < model.head.weight.std().item() < 1.3 * expected
    wide = SummaryRewardModel(RewardModelConfig(backbone="tiny-chat-lm", head_init_std=1.0))
    assert wide.head.weight.std().item() > 5 * expected


def test_score_is_differentiable_and_freezing_keeps_lower_blocks_fixed():
    model = SummaryRewardModel(RewardModelConfig(backbone="tiny-chat-lm", num_trainable_layers=1))
    model.score(["a"], ["b"], ["c"]).sum().backward()
    assert model.head.weight.grad is not None
    assert all(p.grad is not None for p in model.backbone.layers[-1].parameters())
    assert all(p.grad is None for p in model.backbone.layers[0].parameters())
    assert model.backbone.embed_tokens.weight.grad is None


@pytest.mark.parametrize("backbone", BACKBONES)
def test_checkpoint_reloads_to_identical_scores(backbone, tmp_path):
    torch.manual_seed(1)
    model = SummaryRewardModel(RewardModelConfig(backbone=backbone, max_length=200)).eval()
    with torch.no_grad():
        model.head.weight.add_(1.0)  # weights that differ from a fresh init
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    torch.manual_seed(2)
    loaded = SummaryRewardModel.load(tmp_path).eval()
    assert loaded.config == model.config
    args = (["likes cats", None], ["Hi", "Hey"], ["Cats.", "Dogs."])
    with torch.no_grad():
        assert torch.equal(model.score(*args), loaded.score(*args))


def test_bad_config_and_bad_batches_fail_clearly():
    with pytest.raises(ValueError, match="pooling"):
        RewardModelConfig(pooling="max")
    with pytest.raises(ValueError, match="max_length"):
        RewardModelConfig(max_length=2)
    model = SummaryRewardModel(RewardModelConfig(backbone="tiny-chat-lm"))
    with pytest.raises(ValueError, match="as many"):
        model.score(["a"], ["b", "c"], ["d"])
    with pytest.raises(ValueError, match="shorter than the reward template"):
        build_reward_input("s", "p", "r", model.tokenizer, 8)
