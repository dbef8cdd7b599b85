"""The shared-context fast path (`plus.prefix`) against the plain computation, on the tiny Llama with ragged
contexts (left padding) and ragged summaries; and the invariance of the updates to micro_batch_size."""

import copy
import dataclasses

import pytest
import torch
from torch import nn

from plus.coadapt import (
    CoadaptConfig,
    RewardScorer,
    RolloutBatch,
    ValueModel,
    collect_rollout,
    summary_forward,
    update_reward_model,
    update_summarizer,
)
from plus.coadapt.loop import _with_lora
from plus.losses import entropy_from_logits
from plus.models import load_causal_lm
from plus.prefix import frozen_depth, sample_tokens, summary_logits
from plus.summarizer import build_queries, generate_summaries, response_logits, token_logprobs
from tests.test_coadapt import ByteRewardModel, _records

CONTEXTS = [
    "Pair 1: the user chose a reply about dogs.",
    "A much longer context: the user chose the reply about cats over the one about dogs, twice, and said why.",
    "Short.",
]
END_IDS = list(range(200, 262))  # a quarter of the byte vocabulary ends a summary: ragged lengths
ATOL = 1e-4


class _NoAccelerator:
    device = torch.device("cpu")
    num_processes = 1

    @staticmethod
    def unwrap_model(model):
        return model

    @staticmethod
    def backward(loss):
        loss.backward()

    @staticmethod
    def clip_grad_norm_(parameters, max_norm):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def _tiny(lora_top_layers: int | None = None, seed: int = 3) -> nn.Module:
    """The tiny Llama with (optionally) LoRA adapters on its top blocks, adapters set to random values."""
    model, _ = load_causal_lm("tiny-chat-lm", device="cpu")
    if lora_top_layers is None:
        if seed != 3:  # another network than the policy (a separate critic's body)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.01)
        return model.eval()
    config = CoadaptConfig(summarizer_model="tiny-chat-lm", lora=True, lora_rank=4, lora_top_layers=lora_top_layers)
    model = _with_lora(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return model.eval()


def _queries(tokenizer, contexts=CONTEXTS):
    encoded = tokenizer(
        build_queries(tokenizer, contexts), return_tensors="pt", padding=True, add_special_tokens=False
    )
    return encoded.input_ids, encoded.attention_mask


def _sample(model, tokenizer, samples=3, tokens=10, split=None, temperature=0.7, seed=0):
    ids, mask = _queries(tokenizer)
    torch.manual_seed(seed)
    out = sample_tokens(
        model, ids, mask, samples, tokens, END_IDS, tokenizer.pad_token_id, temperature, keep_states_at=split
    )
    assert len(set(out.response_mask.sum(1).tolist())) > 1, "the test needs ragged summary lengths"
    return ids, mask, out


def _plain(model, ids, mask, out, samples):
    return response_logits(
        model,
        ids.repeat_interleave(samples, 0),
        mask.repeat_interleave(samples, 0),
        out.response_ids,
        out.response_mask,
        output_hidden_states=True,
    )


def test_shared_prefix_sampling_draws_from_the_model(tiny_chat_lm):
    """The log-prob the sampler records for each token it drew equals a plain forward over [context, summary]:
    one prefill per context, its cache repeated for the samples, and the decode loop see what a plain pass sees."""
    model, tokenizer = tiny_chat_lm
    ids, mask, out = _sample(model.eval(), tokenizer, samples=3)
    logits, _ = _plain(model, ids, mask, out, 3)
    plain = token_logprobs(logits / 0.7, out.response_ids) * out.response_mask
    assert (out.logprobs - plain).abs().max() <= ATOL
    # The samples of one context differ (they are draws), and padding follows the first end token.
    assert not torch.equal(out.response_ids[0], out.response_ids[1])
    lengths = out.response_mask.sum(1)
    ends = torch.isin(out.response_ids, torch.tensor(END_IDS))
    for row, length in enumerate(lengths.tolist()):
        assert ends[row, : length - 1].sum() == 0 and (length == out.response_ids.shape[1] or ends[row, length - 1])


def test_greedy_shared_prefix_decoding_follows_the_plain_argmax(tiny_chat_lm):
    model, tokenizer = tiny_chat_lm
    ids, mask = _queries(tokenizer)
    out = sample_tokens(model.eval(), ids, mask, 1, 8, END_IDS, tokenizer.pad_token_id, do_sample=False)
    logits, _ = _plain(model, ids, mask, out, 1)
    top2 = logits.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1] > 1e-3) & out.response_mask.bool()  # skip near ties: rounding may flip them
    clear[:, 0] = False  # the first token excludes the end tokens (at least one token is generated)
    assert clear.any() and torch.equal(logits.argmax(-1)[clear], out.response_ids[clear])


@pytest.mark.parametrize("lora_top_layers", [None, 1, 2])
def test_summary_logits_equal_the_plain_pass(tiny_chat_lm, lora_top_layers):
    """From the prefix states (the input of the first trainable block, or the ids when the embeddings train), the
    top blocks give the plain pass's logits and last hidden states at every summary position."""
    _, tokenizer = tiny_chat_lm
    model = _tiny(lora_top_layers)
    split = frozen_depth(model)
    assert split == {None: None, 1: 1, 2: 0}[lora_top_layers]
    ids, mask, out = _sample(model, tokenizer, samples=2, split=split)
    logits, hidden = _plain(model, ids, mask, out, 2)
    states = (ids, out.response_ids[:, :-1]) if split is None else (out.context_states, out.summary_states)
    repeats = torch.full((len(ids),), 2)
    fast_logits, fast_hidden = summary_logits(model, split, states[0], mask, states[1], repeats, True)
    on = out.response_mask.bool()
    assert (fast_logits - logits)[on].abs().max() <= ATOL
    assert (fast_hidden - hidden)[on].abs().max() <= ATOL


def test_gradients_through_the_shared_context_equal_the_plain_ones(tiny_chat_lm):
    """An update from the prefix states sends gradients into the top blocks through the context (its keys and values
    are repeated for the samples) exactly as a plain forward does."""
    _, tokenizer = tiny_chat_lm
    model = _tiny(lora_top_layers=1)
    ids, mask, out = _sample(model, tokenizer, samples=3, split=1)
    weights = torch.randn(out.response_ids.shape, generator=torch.Generator().manual_seed(0)) * out.response_mask
    grads = []
    for fast in (False, True):
        model.zero_grad()
        if fast:
            repeats = torch.full((len(ids),), 3)
            logits, _ = summary_logits(model, 1, out.context_states, mask, out.summary_states, repeats)
        else:
            logits, _ = _plain(model, ids, mask, out, 3)
        # A token mean, as the policy loss is (a sum over 80 tokens would scale the rounding with it).
        ((token_logprobs(logits, out.response_ids) * weights).sum() / out.response_mask.sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0] and all(g.abs().sum() > 0 for g in grads[0].values())
    for name in grads[0]:
        assert (grads[0][name] - grads[1][name]).abs().max() <= ATOL, name


def _rollout_config(**overrides) -> CoadaptConfig:
    values = dict(
        summarizer_model="tiny-chat-lm",
        rollout_batch_size=3,
        train_batch_size=3,
        micro_batch_size=4,
        max_summary_tokens=8,
        estimator="ppo",
        lora=True,
        lora_rank=4,
        lora_top_layers=1,
        temperature=0.7,
        warmup_ratio=0.0,
    )
    return CoadaptConfig(**(values | overrides))


def _rollout_models(config: CoadaptConfig):
    policy, tokenizer = _tiny(config.lora_top_layers), load_causal_lm("tiny-chat-lm", device="cpu")[1]
    policy.generation_config.eos_token_id = END_IDS
    critic = None
    if config.estimator == "ppo":
        body = _tiny(config.lora_top_layers, seed=4) if config.separate_critic else None
        critic = ValueModel(policy.config.hidden_size, body)
        nn.init.normal_(critic.head.weight, std=0.5)
    return policy, critic, tokenizer


def _plain_copy(batch: RolloutBatch) -> RolloutBatch:
    return dataclasses.replace(batch, context_states=None, context_mask=None, summary_states=None, split=None)


@pytest.mark.parametrize(
    ("estimator", "lora", "separate_critic"),
    [("ppo", True, True), ("ppo", True, False), ("rloo", True, True), ("ppo", False, True)],
    ids=["ppo-lora-critic", "ppo-lora-value-head", "rloo-lora", "ppo-full-finetuning"],
)
def test_the_fast_rollout_equals_the_plain_computation_on_its_samples(estimator, lora, separate_critic):
    """collect_rollout on the shared-context path: its log-probs and entropies (taken from the generation), its
    reference log-probs (adapters off, or the frozen copy under full fine-tuning) and its critic values (a separate
    critic, or a value head on the policy's hidden states) equal the plain passes over the same samples; one update
    from each gives the same losses and weights."""
    config = _rollout_config(
        estimator=estimator,
        num_samples=3,
        lora=lora,
        lora_top_layers=1 if lora else None,
        separate_critic=separate_critic,
    )
    policy, critic, tokenizer = _rollout_models(config)
    reference = None if lora else copy.deepcopy(policy).requires_grad_(False)
    records = [
        {**r, "context": c} for r, c in zip(_records(3), CONTEXTS, strict=True)
    ]  # ragged contexts: left padding
    torch.manual_seed(0)
    batch, _ = collect_rollout(
        config, policy, reference, critic, RewardScorer(ByteRewardModel()), tokenizer, records, _NoAccelerator()
    )
    assert batch.context_states is not None and batch.split == (1 if lora else None)
    assert len(set(batch.response_mask.sum(1).tolist())) > 1
    plain = _plain_copy(batch)
    with torch.no_grad():
        logits, hidden = summary_forward(policy, plain, torch.device("cpu"), output_hidden_states=True)
        if lora:
            with policy.disable_adapter():
                ref_logits, _ = summary_forward(policy, plain, torch.device("cpu"))
        else:
            ref_logits, _ = summary_forward(reference, plain, torch.device("cpu"))
    mask = batch.response_mask.float()
    assert (token_logprobs(logits / 0.7, batch.response_ids) * mask - batch.logprobs).abs().max() <= ATOL
    assert (entropy_from_logits(logits / 0.7) * mask - batch.entropy).abs().max() <= ATOL
    assert (token_logprobs(ref_logits / 0.7, batch.response_ids) * mask - batch.ref_logprobs).abs().max() <= ATOL
    if lora:
        assert (batch.logprobs - batch.ref_logprobs).abs().max() > 1e-3  # the adapters matter
    if critic is not None:
        with torch.no_grad():
            assert (critic(plain, policy_hidden=hidden) * mask - batch.values).abs().max() <= ATOL
            assert batch.values.abs().max() > 0
    results = []
    for rollout in (batch, plain):
        models = {"actor": copy.deepcopy(policy)} | ({"critic": copy.deepcopy(critic)} if critic else {})
        optimizers = {
            n: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1) for n, m in models.items()
        }
        schedulers = {n: torch.optim.lr_scheduler.LambdaLR(o, lambda _: 1.0) for n, o in optimizers.items()}
        stats = update_summarizer(
            config, rollout, models["actor"], models.get("critic"), optimizers, schedulers, _NoAccelerator()
        )
        weights = {
            f"{n}.{k}": p.detach() for n, m in models.items() for k, p in m.named_parameters() if p.requires_grad
        }
        results.append((stats, weights))
    (fast_stats, fast_weights), (plain_stats, plain_weights) = results
    assert fast_stats == pytest.approx(plain_stats, abs=ATOL)
    for name in fast_weights:
        assert (fast_weights[name] - plain_weights[name]).abs().max() <= ATOL, name


def _ragged_batch(rows: int = 7, width: int = 6, seed: int = 0) -> RolloutBatch:
    """A PPO batch with ragged summaries over the tiny model's prompts (plain path)."""
    generator = torch.Generator().manual_seed(seed)
    _, tokenizer = load_causal_lm("tiny-chat-lm", device="cpu")
    ids, mask = _queries(tokenizer, [CONTEXTS[i % 3] for i in range(rows)])
    lengths = torch.randint(1, width + 1, (rows,), generator=generator)
    lengths[0] = width
    response_mask = (torch.arange(width)[None] < lengths[:, None]).long()
    response_ids = torch.randint(0, 200, (rows, width), generator=generator) * response_mask
    noise = lambda: torch.randn(rows, width, generator=generator) * response_mask  # noqa: E731
    return RolloutBatch(
        record_index=list(range(rows)),
        summaries=[f"summary {i}" for i in range(rows)],
        statuses=["ok"] * rows,
        query_ids=ids,
        query_mask=mask,
        response_ids=response_ids,
        response_mask=response_mask,
        scores=torch.zeros(rows),
        margins=torch.zeros(rows),
        logprobs=noise() * 0.1 - 3.0 * response_mask,
        values=noise(),
        returns=noise(),
        advantages=noise(),
    )


def test_the_summarizer_update_is_invariant_to_micro_batch_size():
    """micro_batch_size sets the memory use only: the minibatch loss (per-sequence token mean, then the mean over
    sequences) and its gradient are the same for every split of a ragged batch into micro-batches."""
    batch = _ragged_batch()
    results = []
    for micro in (1, 3, 4, 7):
        config = _rollout_config(rollout_batch_size=7, train_batch_size=7, micro_batch_size=micro, lora=False)
        policy, _ = load_causal_lm("tiny-chat-lm", device="cpu")
        critic = ValueModel(policy.config.hidden_size)
        nn.init.normal_(critic.head.weight, std=0.5, generator=torch.Generator().manual_seed(0))
        optimizers = {n: torch.optim.SGD(m.parameters(), lr=1.0) for n, m in (("actor", policy), ("critic", critic))}
        schedulers = {n: torch.optim.lr_scheduler.LambdaLR(o, lambda _: 1.0) for n, o in optimizers.items()}
        config = dataclasses.replace(config, max_grad_norm=0.0)  # no clip: the step is the gradient itself
        stats = update_summarizer(config, batch, policy, critic, optimizers, schedulers, _NoAccelerator())
        weights = torch.cat([p.detach().flatten() for p in list(policy.parameters()) + list(critic.parameters())])
        results.append((stats, weights))
    base_stats, base_weights = results[0]
    before = torch.cat([p.detach().flatten() for p in load_causal_lm("tiny-chat-lm", device="cpu")[0].parameters()])
    assert (base_weights[: len(before)] - before).abs().max() > 1e-4  # the step moved the policy
    for stats, weights in results[1:]:
        assert stats["losses/policy"] == pytest.approx(base_stats["losses/policy"], rel=1e-5, abs=1e-6)
        assert stats["losses/value"] == pytest.approx(base_stats["losses/value"], rel=1e-5, abs=1e-6)
        assert (weights - base_weights).abs().max() <= 1e-5


def test_the_reward_model_update_is_invariant_to_micro_batch_size():
    records = _records(7)
    batch = _ragged_batch()
    results = []
    for micro in (1, 3, 7):
        config = _rollout_config(rollout_batch_size=7, train_batch_size=7, micro_batch_size=micro, max_grad_norm=0.0)
        reward_model = ByteRewardModel()
        optimizer = torch.optim.SGD(reward_model.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        scorer = RewardScorer(reward_model)
        stats = update_reward_model(config, batch, records, scorer, optimizer, scheduler, _NoAccelerator())
        results.append((stats["reward_model/loss"], reward_model.parameter_vector()))
    assert not torch.equal(results[0][1], ByteRewardModel().parameter_vector())
    for loss, weights in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-5, abs=1e-6)
        assert (weights - results[0][1]).abs().max() <= 1e-5


def test_top_p_keeps_the_smallest_set_that_reaches_p():
    from plus.prefix import _top_p_filter

    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    assert torch.isfinite(_top_p_filter(logits, 0.6)).tolist() == [[True, True, False]]
    assert torch.isfinite(_top_p_filter(logits, 0.5)).tolist() == [[True, False, False]]
    assert torch.equal(_top_p_filter(logits[:, [2, 0, 1]], 0.6).isfinite(), torch.tensor([[False, True, True]]))
    assert torch.equal(_top_p_filter(logits, 1.0), logits)


def test_rollout_select_keeps_the_contexts_of_the_rows():
    """With prefix states, a micro-batch keeps one context per run of rows of one record, trimmed to its columns."""
    hidden = 2
    context_mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    batch = RolloutBatch(
        record_index=[0, 0, 1, 1, 2, 2],
        summaries=["s"] * 6,
        statuses=["ok"] * 6,
        query_ids=context_mask.repeat_interleave(2, 0),
        query_mask=context_mask.repeat_interleave(2, 0),
        response_ids=torch.ones(6, 3, dtype=torch.long),
        response_mask=torch.tensor([[1, 0, 0]] * 4 + [[1, 1, 0], [1, 0, 0]]),
        scores=torch.zeros(6),
        margins=torch.zeros(6),
        context_states=torch.arange(3 * 4 * hidden, dtype=torch.float).view(3, 4, hidden),
        context_mask=context_mask,
        summary_states=torch.arange(6 * 2 * hidden, dtype=torch.float).view(6, 2, hidden),
        split=1,
    )
    part = batch.select([1, 2, 3, 4, 5])  # the end of record 0, record 1, record 2
    assert torch.equal(part.context_mask, context_mask)
    part = batch.select([4, 5])
    assert torch.equal(part.context_mask, torch.tensor([[1]]))
    assert torch.equal(part.context_states, batch.context_states[2:, 3:])
    assert torch.equal(part.summary_states, batch.summary_states[4:, :1]) and part.split == 1


def test_generate_summaries_keeps_states_for_each_distinct_context(tiny_chat_lm):
    model, tokenizer = tiny_chat_lm
    torch.manual_seed(0)
    out = generate_summaries(
        model, tokenizer, CONTEXTS, max_new_tokens=5, num_samples=2, batch_size=4, keep_states_at=1
    )
    assert out.response_ids.shape[0] == 6 and out.context_states.shape[:2] == out.context_mask.shape
    assert out.context_mask.shape[0] == 3 and out.summary_states.shape[:2] == (6, out.response_ids.shape[1] - 1)
    assert torch.equal(out.query_ids[::2], out.query_ids[1::2])  # the two samples of a context share its prompt
    with pytest.raises(ValueError, match="shared-prefix"):
        generate_summaries(model, tokenizer, CONTEXTS, max_new_tokens=2, plain=True, keep_states_at=1)


def test_an_unsupported_architecture_is_a_clear_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16))
    with pytest.raises(ValueError, match="shared_context=False"):
        frozen_depth(model)
