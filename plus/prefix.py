"""Shared-prefix passes of the summarizer: each context is read once for all of its summaries, and blocks whose
weights never change are run once per rollout batch.

A rollout batch of PLUS samples K summaries of each of B contexts and then runs the summarizer over
``[context, summary]`` several times: the rollout's log-probs, the reference log-probs (LoRA switched off), the
critic, and the update. Done plainly (`plus.summarizer.response_logits`), every pass reads each context K times,
runs every block, and computes logits over the whole vocabulary at every context position. This module does the
same arithmetic with less work:

- `sample_tokens` prefills each context once, repeats its keys and values once into a preallocated buffer for its
  K samples and decodes all N = B K rows in one loop that writes each new token's keys in place (logits only at the
  last position). While it decodes it keeps the input of block ``split`` at
  every context and summary token: the *prefix states*. It also returns the log-prob and entropy of every token
  it drew, so the rollout's own pass over the policy is the generation itself.
- `summary_logits` runs only blocks ``split`` .. L-1 from those states: the context part once per context, its
  keys and values repeated for the context's samples, then the summary tokens of all samples attending to them.
  Logits are computed at the S summary positions only. Gradients flow into the context part, so an update sees
  exactly what a plain forward would give.

``split`` is `frozen_depth`: the bottom blocks (and the embeddings) with no trainable weight. With LoRA on the top
k of L blocks it is L - k; with LoRA everywhere it is 0 (the frozen embeddings are kept); with a trainable
embedding it is None and the passes start from the token ids. The reference summarizer (adapters off) and a
separate critic copied from the summarizer share those frozen blocks, so they start from the same states.

Supported: decoder-only models built like Llama (``llama``, ``qwen2``, ``qwen3``, ``mistral``); anything else is a
clear error (`plus.coadapt.CoadaptConfig.shared_context` = False takes the plain path). Equivalence with the plain
path is tested in ``tests/test_prefix.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")


@dataclass
class _Decoder:
    """The parts of a Llama-like causal LM the passes call directly."""

    model: nn.Module  # the ``*Model`` body: embed_tokens, layers, norm, rotary_emb
    lm_head: nn.Module


def _decoder(model: nn.Module) -> _Decoder:
    """The body and head of ``model`` (a causal LM, possibly wrapped by peft)."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    model_type = getattr(getattr(causal, "config", None), "model_type", None)
    body = getattr(causal, "model", None)
    if model_type not in SUPPORTED_MODEL_TYPES or not all(
        hasattr(body, name) for name in ("embed_tokens", "layers", "norm", "rotary_emb")
    ):
        raise ValueError(
            f"Shared-prefix passes support {SUPPORTED_MODEL_TYPES} decoders, not {model_type!r} "
            f"({type(causal).__name__}); set CoadaptConfig.shared_context=False for the plain path"
        )
    return _Decoder(body, causal.get_output_embeddings())


def frozen_depth(model: nn.Module) -> int | None:
    """How many bottom blocks have no trainable weight (the embeddings frozen too), at most L - 1 (the passes run at
    least the top block); None if the embeddings train."""
    decoder = _decoder(model)
    if any(p.requires_grad for p in decoder.model.embed_tokens.parameters()):
        return None
    depth = 0
    for layer in decoder.model.layers:
        if any(p.requires_grad for p in layer.parameters()):
            break
        depth += 1
    return min(depth, len(decoder.model.layers) - 1)


@dataclass
class SampledTokens:
    """What `sample_tokens` returns. B contexts, N = B K rows (the K samples of a context are consecutive),
    Q context tokens, S summary tokens, H hidden width."""

    response_ids: torch.Tensor  # (N, S) sampled tokens, right-padded; the first end token is kept
    response_mask: torch.Tensor  # (N, S) 1 up to and including the first end token
    logprobs: torch.Tensor  # (N, S) log-prob of each sampled token under logits / temperature (0 on padding)
    entropy: torch.Tensor  # (N, S) entropy of softmax(logits / temperature) at each summary position (0 on padding)
    context_states: torch.Tensor | None  # (B, Q, H) input of block ``split`` at the context tokens (None: not kept)
    summary_states: torch.Tensor | None  # (N, S - 1, H) the same at summary tokens 0 .. S-2 (the last is never read)
    seconds: float  # wall time of the prefill and decode
    final_hidden: torch.Tensor | None = None  # (N, S, H) last hidden state (final norm applied) predicting each token
    first_logprobs: torch.Tensor | None = None  # (N, V) the tempered log-softmax the first token is drawn from


def end_mask(tokens: torch.Tensor, end_ids: list[int]) -> torch.Tensor:
    """(N, S) generated tokens -> (N, S) 1 up to and including each row's first end token (every column without
    one)."""
    is_end = torch.isin(tokens, torch.tensor(end_ids, device=tokens.device))
    first_end = torch.where(is_end.any(1), is_end.float().argmax(1), tokens.shape[1])  # (N,) index or S
    return (torch.arange(tokens.shape[1], device=tokens.device)[None] <= first_end[:, None]).long()


def _draw(weights: torch.Tensor) -> torch.Tensor:
    """One token per row with probability proportional to ``weights`` (N, V) >= 0: the inverse of the cumulative
    distribution at a uniform draw (torch.multinomial draws V exponentials per row, several times slower)."""
    cumulative = weights.cumsum(-1)  # (N, V)
    draw = torch.rand(weights.shape[0], 1, dtype=weights.dtype, device=weights.device) * cumulative[:, -1:]
    return torch.searchsorted(cumulative, draw, right=True).squeeze(1).clamp_max(weights.shape[1] - 1)  # (N,)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Logits outside the smallest set of tokens whose probability reaches ``top_p`` set to -inf. (N, V) -> (N, V)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    drop = cumulative - sorted_logits.softmax(-1) >= top_p  # tokens after the set (the top token always stays)
    return logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))


@torch.no_grad()
def sample_tokens(
    model: PreTrainedModel,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    num_samples: int,
    max_new_tokens: int,
    end_ids: list[int],
    pad_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = True,
    keep_states_at: int | None = None,
    keep_final_hidden: bool = False,
    keep_first_distribution: bool = False,
) -> SampledTokens:
    """Sample ``num_samples`` continuations of each left-padded query (B, Q): one prefill per query, its keys and
    values repeated once into a preallocated buffer for the samples, one decode loop for all rows that writes each
    new token's keys in place, logits at the last position only. The first token is never an end token (at least
    one generated token, as ``min_new_tokens=1``). With ``do_sample=False``, greedy. ``keep_states_at`` = b keeps
    the input of block b (0: the embeddings) for `summary_logits`; ``keep_final_hidden`` the last hidden state at
    every summary position (a value head reads it); ``keep_first_distribution`` the whole distribution of the
    first token (what the summarizer would write first, read without sampling).

    The log-probs and entropies returned are those of the distribution each token was drawn from (the logits at
    ``temperature``, before the end tokens are masked at the first step), as a plain forward over
    [context, summary] computes them (tested to 1e-4), so a rollout can take them from here."""
    began = time.perf_counter()
    decoder = _decoder(model)
    blocks = len(decoder.model.layers)
    split = blocks if keep_states_at is None else keep_states_at
    context_keys = _ContextKeys()
    hidden = decoder.model.embed_tokens(query_ids)  # (B, Q, H)
    width_q = query_ids.shape[1]
    causal = torch.ones(width_q, width_q, dtype=torch.bool, device=query_ids.device).tril()
    allowed = causal[None] & query_mask.bool()[:, None, :]  # (B, Q, Q)
    positions = (query_mask.cumsum(1) - 1).clamp_min(0)  # (B, Q)
    mask = _additive_mask(allowed, hidden.dtype)
    rotary = decoder.model.rotary_emb(hidden, position_ids=positions)
    hidden = _blocks(decoder, 0, split, hidden, mask, positions, context_keys, rotary)
    context_states = hidden if keep_states_at is not None else None  # (B, Q, H)
    hidden = decoder.model.norm(_blocks(decoder, split, blocks, hidden, mask, positions, context_keys, rotary))
    last = hidden[:, -1:].repeat_interleave(num_samples, dim=0)  # (N, 1, H)
    finals = [last] if keep_final_hidden else []
    logits = decoder.lm_head(last)[:, -1].float()  # (N, V)
    rows = logits.shape[0]
    keys = _KeyBuffer(context_keys, num_samples, width_q + max_new_tokens)
    # The decode mask over the buffer: the row's real context tokens, then its summary tokens as they are written.
    visible = torch.zeros(rows, 1, 1, keys.capacity, dtype=hidden.dtype, device=hidden.device)
    visible.fill_(torch.finfo(hidden.dtype).min)
    visible[:, 0, 0, :width_q].masked_fill_(query_mask.bool().repeat_interleave(num_samples, dim=0), 0.0)
    lengths = query_mask.sum(1).repeat_interleave(num_samples)  # (N,) real context tokens per row
    ends = torch.tensor(end_ids, device=logits.device)
    done = torch.zeros(rows, dtype=torch.bool, device=logits.device)
    tokens, logprobs, entropies, states = [], [], [], []
    first = None
    for step in range(max_new_tokens):
        tempered = (logits / temperature).log_softmax(-1)  # (N, V) the distribution tokens are drawn from
        if step == 0 and keep_first_distribution:
            first = tempered
        probs = tempered.exp()
        weights = probs.index_fill(1, ends, 0.0) if step == 0 else probs  # at least one token before an end
        if not do_sample:
            token = weights.argmax(-1)
        else:
            if top_p < 1.0:
                weights = _top_p_filter(weights.log(), top_p).exp()
            token = _draw(weights)
        tokens.append(token.masked_fill(done, pad_id))
        logprobs.append(tempered.gather(1, token[:, None]).squeeze(1).masked_fill(done, 0.0))
        entropies.append(-(probs * tempered).sum(-1).masked_fill(done, 0.0))
        done = done | torch.isin(token, ends)
        if done.all() or step == max_new_tokens - 1:
            break
        visible[:, 0, 0, width_q + step] = 0.0
        positions = (lengths + step)[:, None]  # (N, 1)
        hidden = decoder.model.embed_tokens(tokens[-1][:, None])  # (N, 1, H)
        rotary = decoder.model.rotary_emb(hidden, position_ids=positions)
        hidden = _blocks(decoder, 0, split, hidden, visible, positions, keys, rotary)
        if keep_states_at is not None:
            states.append(hidden)  # (N, 1, H)
        hidden = decoder.model.norm(_blocks(decoder, split, blocks, hidden, visible, positions, keys, rotary))
        if keep_final_hidden:
            finals.append(hidden)
        keys.advance()
        logits = decoder.lm_head(hidden)[:, -1].float()
    response_ids = torch.stack(tokens, 1)  # (N, S)
    response_mask = end_mask(response_ids, end_ids)  # (N, S)
    response_ids = response_ids.masked_fill(response_mask == 0, pad_id)
    summary_states = None
    if keep_states_at is not None:
        summary_states = torch.cat(states, 1) if states else context_states.new_zeros(rows, 0, hidden.shape[-1])
    return SampledTokens(
        response_ids=response_ids,
        response_mask=response_mask,
        logprobs=torch.stack(logprobs, 1) * response_mask,
        entropy=torch.stack(entropies, 1) * response_mask,
        context_states=context_states,
        summary_states=summary_states,
        seconds=time.perf_counter() - began,
        final_hidden=torch.cat(finals, 1) if keep_final_hidden else None,
        first_logprobs=first,
    )


class _KeyBuffer:
    """Stands in for a transformers Cache while decoding: every block's keys and values in a buffer of ``capacity``
    positions, the contexts' repeated for their samples once, then one position per decoded token written in place
    (a cache grown with torch.cat copies all of itself at every step). Attention reads the whole buffer; the mask
    hides the positions not written yet."""

    def __init__(self, context: _ContextKeys, repeats: int, capacity: int) -> None:
        self.capacity = capacity
        self.position = next(iter(context.keys.values())).shape[2]
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        for index in context.keys:
            for store, source in ((self.keys, context.keys[index]), (self.values, context.values[index])):
                rows, heads, width, dim = source.shape
                buffer = source.new_empty(rows * repeats, heads, capacity, dim)
                buffer[:, :, :width] = source.repeat_interleave(repeats, dim=0)
                buffer[:, :, width:] = 0.0  # masked, but must be finite (0 x inf is nan)
                store[index] = buffer

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.keys[layer_idx][:, :, self.position] = key[:, :, 0]
        self.values[layer_idx][:, :, self.position] = value[:, :, 0]
        return self.keys[layer_idx], self.values[layer_idx]

    def advance(self) -> None:
        """One token was written in every block."""
        self.position += 1


class _ContextKeys:
    """Stands in for a transformers Cache inside the attention of blocks ``split`` ..: in the context stage it keeps
    each block's keys and values; after `repeat` every summary row attends to its context's keys, then its own."""

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.repeated = False

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        if not self.repeated:
            self.keys[layer_idx], self.values[layer_idx] = key, value
            return key, value
        return torch.cat([self.keys[layer_idx], key], 2), torch.cat([self.values[layer_idx], value], 2)

    def repeat(self, repeats: torch.Tensor) -> None:
        for index in self.keys:
            self.keys[index] = self.keys[index].repeat_interleave(repeats, dim=0)
            self.values[index] = self.values[index].repeat_interleave(repeats, dim=0)
        self.repeated = True


def _additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(b, q, k) booleans -> (b, 1, q, k) additive mask (0 where allowed, the dtype's minimum elsewhere)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )[:, None]


def _blocks(decoder: _Decoder, start: int, stop: int, hidden, mask, positions, keys, rotary) -> torch.Tensor:
    """Blocks ``start`` .. ``stop`` - 1 of the decoder on ``hidden`` (b, T, H); ``keys`` collects their keys."""
    for layer in decoder.model.layers[start:stop]:
        hidden = layer(
            hidden,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=keys,
            use_cache=True,
            position_embeddings=rotary,
        )
    return hidden


def summary_logits(
    model: nn.Module,
    split: int | None,
    context_states: torch.Tensor,
    context_mask: torch.Tensor,
    summary_states: torch.Tensor,
    repeats: torch.Tensor,
    output_hidden_states: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (N, S, V) that predict each summary token, and optionally the last block's output (N, S, H) at the
    same positions, from blocks ``split`` .. L-1 of ``model`` only (``split`` None: from the token ids).

    ``context_states`` (b, Q, H) are the inputs of block ``split`` at b left-padded contexts (token ids (b, Q) when
    ``split`` is None), ``context_mask`` (b, Q); ``summary_states`` (N, S-1, H) or ids (N, S-1) at the first S-1
    summary tokens of the N = sum(repeats) rows; row n belongs to the context repeats says (consecutive rows).
    The same numbers as `plus.summarizer.response_logits` on ``[context, summary]``, up to rounding."""
    decoder = _decoder(model)
    if split is None:
        split = 0
        context_states = decoder.model.embed_tokens(context_states)
        summary_states = decoder.model.embed_tokens(summary_states)
    dtype = context_states.dtype
    width_q, width_s = context_mask.shape[1], summary_states.shape[1]
    keys = _ContextKeys()
    # Context stage, once per context: causal over its real tokens (left padding masked).
    causal = torch.ones(width_q, width_q, dtype=torch.bool, device=context_mask.device).tril()
    allowed = causal[None] & context_mask.bool()[:, None, :]  # (b, Q, Q)
    positions = (context_mask.cumsum(1) - 1).clamp_min(0)  # (b, Q)
    depth = len(decoder.model.layers)
    rotary = decoder.model.rotary_emb(context_states, position_ids=positions)
    context_out = _blocks(
        decoder, split, depth, context_states, _additive_mask(allowed, dtype), positions, keys, rotary
    )
    last = context_out[:, -1:].repeat_interleave(repeats, dim=0)  # (N, 1, H): predicts summary token 0
    if width_s:
        # Summary stage: every row reads its context's keys (repeated) and its own earlier summary tokens.
        keys.repeat(repeats)
        context_keys = context_mask.bool().repeat_interleave(repeats, dim=0)[:, None, :].expand(-1, width_s, -1)
        own = torch.ones(width_s, width_s, dtype=torch.bool, device=context_mask.device).tril()
        allowed = torch.cat([context_keys, own[None].expand(len(last), -1, -1)], dim=2)  # (N, S-1, Q + S-1)
        lengths = context_mask.sum(1).repeat_interleave(repeats)  # (N,)
        positions = lengths[:, None] + torch.arange(width_s, device=lengths.device)[None]  # (N, S-1)
        rotary = decoder.model.rotary_emb(summary_states, position_ids=positions)
        mask = _additive_mask(allowed, dtype)
        summary_out = _blocks(decoder, split, depth, summary_states, mask, positions, keys, rotary)
        last = torch.cat([last, summary_out], dim=1)  # (N, S, H)
    hidden = decoder.model.norm(last)  # (N, S, H) the last block's normalised output, as hidden_states[-1] is
    return decoder.lm_head(hidden).float(), (hidden if output_hidden_states else None)  # (N, S, V)
