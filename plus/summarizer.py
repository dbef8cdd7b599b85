"""The PLUS summarizer: its instruction, batched sampling of summaries, summary parsing and token log-probs.

The summarizer is a causal chat LM. It reads a user's context (earlier conversations or labelled preference
pairs, as text) and writes a short summary of the user's preferences. Its instruction ends with a fixed
marker ("Start your response with ##Summary"); the summary is the text after the LAST marker. A response
without the marker is kept whole (``text.split(marker)[-1]``, as the public PLUS code does) and flagged, so
small models that ignore the marker still get scored, and the metrics count how often it happens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase

from plus.prefix import SampledTokens, end_mask, sample_tokens

SUMMARY_MARKER = "##Summary"

SUMMARIZER_INSTRUCTION = (
    "Below are earlier conversations between a user and an assistant. In each one the user saw two responses "
    "and chose the one they preferred. Write a short summary, under 50 words, of this user's preferences: what "
    "they like and dislike in a response, so that another assistant could answer them the way they want. "
    f"Start your response with {SUMMARY_MARKER}"
)


@dataclass(frozen=True)
class ParsedSummary:
    """One generated response, parsed."""

    text: str
    """The summary: the text after the last marker, stripped (the whole response if the marker is missing)."""
    raw: str
    """The decoded response, special tokens removed."""
    has_marker: bool
    """Whether the response contains the marker."""
    truncated: bool
    """Whether generation hit the length cap before the end-of-turn token (the summary may be cut off)."""

    @property
    def is_empty(self) -> bool:
        """No summary text at all (empty response, or nothing after the marker)."""
        return not self.text

    @property
    def status(self) -> str:
        """``ok``, ``empty``, ``no_marker`` or ``truncated`` (the first that applies, in that order of badness)."""
        if self.is_empty:
            return "empty"
        if not self.has_marker:
            return "no_marker"
        if self.truncated:
            return "truncated"
        return "ok"


@dataclass
class GeneratedSummaries:
    """A batch of sampled summaries with the token ids PPO needs. B distinct contexts, N = B x samples rows, Q query
    tokens, S response tokens, H hidden width."""

    summaries: list[ParsedSummary]
    """One parsed summary per row (the samples of a context are consecutive), in input order."""
    query_ids: torch.Tensor
    """(N, Q) chat-formatted prompts, left-padded (one row per summary)."""
    query_mask: torch.Tensor
    """(N, Q) 1 on prompt tokens, 0 on padding."""
    response_ids: torch.Tensor
    """(N, S) generated tokens, right-padded with the pad id; the end-of-turn token is kept when generated."""
    response_mask: torch.Tensor
    """(N, S) 1 on generated tokens up to and including the first end-of-turn token, 0 after."""
    seconds: float
    """Wall time of the generation calls."""
    context_states: torch.Tensor | None = None
    """(B, Q, H) prefix states at the B distinct contexts, left-padded (only with ``keep_states_at``)."""
    context_mask: torch.Tensor | None = None
    """(B, Q) 1 on the distinct contexts' tokens (only with ``keep_states_at``)."""
    summary_states: torch.Tensor | None = None
    """(N, S - 1, H) prefix states at summary tokens 0 .. S-2, right-padded (only with ``keep_states_at``)."""
    logprobs: torch.Tensor | None = None
    """(N, S) log-prob of each generated token under the logits at the sampling temperature (None: plain path)."""
    entropy: torch.Tensor | None = None
    """(N, S) entropy of the tempered distribution at each summary position (None: plain path)."""
    final_hidden: torch.Tensor | None = None
    """(N, S, H) last hidden state predicting each summary token (only with ``keep_final_hidden``)."""
    first_logprobs: torch.Tensor | None = None
    """(N, V) log-probs of the first summary token at the sampling temperature (``keep_first_distribution``)."""

    @property
    def response_lengths(self) -> torch.Tensor:
        """(N,) generated tokens per summary (at least 1: an immediate end-of-turn counts)."""
        return self.response_mask.sum(dim=1)

    @property
    def num_tokens(self) -> int:
        return int(self.response_mask.sum())

    @property
    def tokens_per_second(self) -> float:
        return self.num_tokens / max(self.seconds, 1e-9)

    @property
    def texts(self) -> list[str]:
        return [summary.text for summary in self.summaries]


def build_summarizer_messages(context: str) -> list[dict[str, str]]:
    """The chat messages that ask for a summary of ``context``: one user turn, instruction then context."""
    if not isinstance(context, str) or not context.strip():
        raise ValueError(f"The summarizer needs a non-empty context string, got {context!r}")
    return [{"role": "user", "content": f"{SUMMARIZER_INSTRUCTION}\n\n{context.strip()}"}]


def parse_summary(text: str, truncated: bool = False, marker: str = SUMMARY_MARKER) -> ParsedSummary:
    """The summary in a decoded response: the text after the last ``marker``, stripped.

    ``truncated`` says whether generation stopped at the length cap rather than at the end-of-turn token."""
    has_marker = marker in text
    summary = text.split(marker)[-1].strip().lstrip(":").strip()
    return ParsedSummary(text=summary, raw=text, has_marker=has_marker, truncated=truncated)


def _end_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> list[int]:
    """Token ids that end a turn: the tokenizer's eos and the model's generation eos (an int or a list)."""
    ids = {tokenizer.eos_token_id}
    configured = model.generation_config.eos_token_id
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def _encoded_batches(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], batch_size: int, device: torch.device, caller: str
) -> list[BatchEncoding]:
    """The prompts tokenized in left-padded batches of ``batch_size`` (so every prompt ends in the last column)."""
    if tokenizer.padding_side != "left":
        raise ValueError(f"{caller} needs a left-padded tokenizer (plus.models.load_causal_lm gives one)")
    # Chat templates already hold the special tokens, so the tokenizer must not add them again.
    return [
        tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(
            device
        )
        for start in range(0, len(prompts), batch_size)
    ]


def assistant_prefill(prefill_marker: bool, summary_prefix: str = "") -> str:
    """The text the assistant turn starts with: nothing, the marker, or the marker and the summary's first words."""
    if summary_prefix and not prefill_marker:
        raise ValueError(f"summary_prefix={summary_prefix!r} needs prefill_marker=True")
    if not prefill_marker:
        return ""
    return f"{SUMMARY_MARKER}\n{summary_prefix}" if summary_prefix else SUMMARY_MARKER


def build_queries(
    tokenizer: PreTrainedTokenizerBase, contexts: list[str], prefill_marker: bool = False, summary_prefix: str = ""
) -> list[str]:
    """Chat-formatted prompt strings, ready to tokenize; the assistant turn starts with `assistant_prefill`."""
    prefill = assistant_prefill(prefill_marker, summary_prefix)
    prompts = []
    for index, context in enumerate(contexts):
        try:
            messages = build_summarizer_messages(context)
        except ValueError as error:
            raise ValueError(f"context {index}: {error}") from None
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompts.append(prompt + prefill)
    return prompts


@torch.no_grad()
def generate_summaries(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    contexts: list[str],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = True,
    batch_size: int = 8,
    prefill_marker: bool = False,
    summary_prefix: str = "",
    num_samples: int = 1,
    keep_states_at: int | None = None,
    keep_final_hidden: bool = False,
    plain: bool = False,
    keep_first_distribution: bool = False,
) -> GeneratedSummaries:
    """Sample (or, with ``do_sample=False``, greedily decode) ``num_samples`` summaries per context; the samples of
    a context are consecutive rows of the result.

    ``batch_size`` rows are decoded together: each context is prefilled once and its keys and values serve all of
    its samples (`plus.prefix.sample_tokens`). ``keep_states_at`` = b also keeps the input of block b at every
    context and summary token, the prefix states from which `plus.prefix.summary_logits` runs the blocks above,
    and ``keep_final_hidden`` the last hidden state at every summary position. The log-probs and entropies of the
    generated tokens come with the result (not on the plain path). ``plain=True`` is the plain reference path,
    kept for the tests and the benchmark: transformers' ``generate`` on every (context, sample) row, in batches of
    ``batch_size``.

    Sampling draws from torch's global RNG: seed it for reproducible summaries. ``prefill_marker`` puts the
    marker at the start of the assistant turn (a help for small models that ignore the instruction; the paper
    does not), and the parsed summaries then count it as present. ``summary_prefix`` (with the marker) also
    writes the summary's first words, e.g. "This user prefers"; the summary is the prefix and what follows it,
    and it counts as empty when nothing but white space follows."""
    if max_new_tokens < 1 or batch_size < 1 or num_samples < 1:
        raise ValueError(
            f"max_new_tokens, batch_size and num_samples must be >= 1, got {max_new_tokens}, {batch_size}, "
            f"{num_samples}"
        )
    if plain and (keep_states_at is not None or keep_final_hidden or keep_first_distribution):
        raise ValueError(
            "keep_states_at, keep_final_hidden and keep_first_distribution need the shared-prefix sampler "
            "(plain=False)"
        )
    prompts = build_queries(tokenizer, contexts, prefill_marker, summary_prefix)
    prefill = assistant_prefill(prefill_marker, summary_prefix)
    device = next(model.parameters()).device
    end_ids = _end_ids(tokenizer, model)
    pad_id = tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    if plain:
        prompts = [prompt for prompt in prompts for _ in range(num_samples)]
        batches = _encoded_batches(tokenizer, prompts, batch_size, device, "generate_summaries")
        parts = [
            _generate_plain(model, encoded, max_new_tokens, temperature, top_p, do_sample, end_ids, pad_id)
            for encoded in batches
        ]
    else:
        per_call = max(1, batch_size // num_samples)  # contexts per decode loop
        batches = _encoded_batches(tokenizer, prompts, per_call, device, "generate_summaries")
        parts = [
            sample_tokens(
                model,
                encoded.input_ids,
                encoded.attention_mask,
                num_samples,
                max_new_tokens,
                end_ids,
                pad_id,
                temperature,
                top_p,
                do_sample,
                keep_states_at,
                keep_final_hidden,
                keep_first_distribution,
            )
            for encoded in batches
        ]
    if was_training:
        model.train()
    queries, responses, summaries = [], [], []
    for encoded, part in zip(batches, parts, strict=True):
        samples = 1 if plain else num_samples
        for row in range(part.response_ids.shape[0]):
            length = int(part.response_mask[row].sum())
            tokens = part.response_ids[row, :length].tolist()
            truncated = tokens[-1] not in end_ids and length >= max_new_tokens
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            if summary_prefix and not text.strip():  # nothing after the prefix: an empty summary, not the bare prefix
                summaries.append(parse_summary(SUMMARY_MARKER, truncated))
            else:
                summaries.append(parse_summary(prefill + text, truncated))
            responses.append(part.response_ids[row, :length].cpu())
            context = row // samples
            queries.append(encoded.input_ids[context][encoded.attention_mask[context].bool()].cpu())
    query_ids, query_mask = pad_sequences(queries, pad_id, side="left")
    response_ids, response_mask = pad_sequences(responses, pad_id, side="right")
    generated = GeneratedSummaries(
        summaries, query_ids, query_mask, response_ids, response_mask, sum(p.seconds for p in parts)
    )
    width = response_ids.shape[1]
    if not plain:
        generated.logprobs = _stack_padded([p.logprobs for p in parts], width, side="right")
        generated.entropy = _stack_padded([p.entropy for p in parts], width, side="right")
    if keep_first_distribution:
        generated.first_logprobs = torch.cat([p.first_logprobs.cpu() for p in parts])
    if keep_final_hidden:
        generated.final_hidden = _stack_padded([p.final_hidden for p in parts], width, side="right")
    if keep_states_at is not None:
        unique = query_mask[::num_samples]
        generated.context_mask = unique
        generated.context_states = _stack_padded([p.context_states for p in parts], unique.shape[1], side="left")
        generated.summary_states = _stack_padded([p.summary_states for p in parts], width - 1, side="right")
    return generated


def _stack_padded(parts: list[torch.Tensor], width: int, side: str) -> torch.Tensor:
    """(b_i, T_i, ...) tensors zero-padded along T to ``width`` on ``side``, then stacked: (sum b_i, width, ...)."""
    padded = []
    for part in parts:
        missing = width - part.shape[1]
        spec = (0, 0) * (part.dim() - 2) + ((missing, 0) if side == "left" else (0, missing))
        padded.append(F.pad(part, spec).cpu())
    return torch.cat(padded)


def _generate_plain(
    model: PreTrainedModel,
    encoded: BatchEncoding,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    do_sample: bool,
    end_ids: list[int],
    pad_id: int,
) -> SampledTokens:
    """transformers' ``generate`` on one batch (the plain reference path of `generate_summaries`)."""
    # top_k=0 switches off the top-k filter most generation configs set, so only temperature and top_p shape sampling.
    sampling = {"temperature": temperature, "top_p": top_p, "top_k": 0} if do_sample else {}
    began = time.perf_counter()
    output = model.generate(
        **encoded,
        max_new_tokens=max_new_tokens,
        min_new_tokens=1,
        pad_token_id=pad_id,
        eos_token_id=end_ids,
        do_sample=do_sample,
        **sampling,
    )  # (b, Q + s)
    seconds = time.perf_counter() - began
    generated = output[:, encoded.input_ids.shape[1] :].cpu()  # (b, s)
    mask = end_mask(generated, end_ids)  # (b, s)
    empty = torch.zeros_like(generated, dtype=torch.float)
    return SampledTokens(generated.masked_fill(mask == 0, pad_id), mask, empty, empty, None, None, seconds)


def first_token_ids(tokenizer: PreTrainedTokenizerBase, words: list[list[str]]) -> torch.Tensor:
    """(N, k): the first token of each word, read with a leading space (as a word that follows a prefix)."""
    first = [[tokenizer(f" {word}", add_special_tokens=False).input_ids[0] for word in row] for row in words]
    return torch.tensor(first)


@torch.no_grad()
def next_word_probs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    contexts: list[str],
    words: list[list[str]],
    temperature: float = 1.0,
    batch_size: int = 8,
    prefill_marker: bool = False,
    summary_prefix: str = "",
) -> torch.Tensor:
    """(len(contexts), k): the probability, at ``temperature``, that the summarizer's next token after the prefilled
    assistant turn is the first token of each of the k ``words`` given for that context (read with a leading
    space, as a word that follows the prefix). What the summarizer would write first, without sampling."""
    if len(words) != len(contexts) or len({len(w) for w in words}) > 1:
        raise ValueError(
            f"words needs one list of the same length per context, got {len(words)} lists for "
            f"{len(contexts)} contexts, of lengths {sorted({len(w) for w in words})}"
        )
    ids = first_token_ids(tokenizer, words)  # (N, k)
    prompts = build_queries(tokenizer, contexts, prefill_marker, summary_prefix)
    device = next(model.parameters()).device
    batches = _encoded_batches(tokenizer, prompts, batch_size, device, "next_word_probs")
    was_training = model.training
    model.eval()
    probs = []
    for encoded, batch_ids in zip(batches, ids.split(batch_size), strict=True):
        # (b, V): left padding puts every prompt's end last
        last = model(**encoded, logits_to_keep=1).logits[:, -1].float()
        probs.append((last / temperature).softmax(-1).cpu().gather(1, batch_ids))
    if was_training:
        model.train()
    return torch.cat(probs) if probs else torch.zeros(0, 0)


def pad_sequences(sequences: list[torch.Tensor], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D token tensors into (B, T) ids and a (B, T) mask, padding on ``side`` ("left" or "right")."""
    width = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if side == "left" else slice(0, len(sequence))
        ids[row, span] = sequence
        mask[row, span] = 1
    return ids, mask


def response_logits(
    model: PreTrainedModel,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    output_hidden_states: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits that predict each response token, and optionally the last layer's hidden states at the same
    positions. Inputs (B, Q) and (B, S); outputs (B, S, V) and (B, S, H) or None.

    The position that predicts response token s is the one just before it, so the model sees
    ``[query, response]`` and we keep positions Q-1 .. Q+S-2."""
    input_ids = torch.cat([query_ids, response_ids], dim=1)  # (B, Q + S)
    attention_mask = torch.cat([query_mask, response_mask], dim=1)  # (B, Q + S)
    # Position ids count only real tokens, so left padding does not shift the positions the model saw when sampling.
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp_min(0)  # (B, Q + S)
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        output_hidden_states=output_hidden_states,
        use_cache=False,
    )
    width_q, width_s = query_ids.shape[1], response_ids.shape[1]
    logits = output.logits[:, width_q - 1 : width_q + width_s - 1].float()  # (B, S, V)
    hidden = output.hidden_states[-1][:, width_q - 1 : width_q + width_s - 1] if output_hidden_states else None
    return logits, hidden


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log pi(token) under ``logits``: (B, S, V), (B, S) -> (B, S)."""
    return torch.gather(F.log_softmax(logits, dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)
