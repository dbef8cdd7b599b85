"""Zero-shot personalized generation: a generator answers a prompt with a user's summary in its instructions, or
without one (the default answer), and a judge that knows the user (`plus.judge`) compares the two.

`generate_responses` samples the answers (seeded, batched, left-padded, any causal LM `plus.models` loads);
`pets_outcomes` (Pets users) and `style_outcomes` (attribute users, by the style judge) turn answers into the user's
comparisons of personalized against default answers, which `plus.judge.win_rate` summarizes with a 95% interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from plus.judge import StyleJudge, pairwise_outcome, pets_utility, style_utility
from plus.summarizer import _encoded_batches, _end_ids

PERSONALIZE_INSTRUCTION = "What we know about this user: {summary}\nWrite the answer this user would prefer."
"""The system turn that carries the summary (the PLUS paper conditions its generator on the summary the same way:
in the instructions, no fine-tuning)."""


def generator_messages(prompt: str, summary: str | None = None) -> list[dict[str, str]]:
    """The chat turns of one request: the user's ``prompt``, after a system turn with the ``summary`` when one is
    given (None: the default, unpersonalized request)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"the generator needs a non-empty prompt, got {prompt!r}")
    turns = [{"role": "user", "content": prompt.strip()}]
    if summary is None:
        return turns
    if not isinstance(summary, str) or not summary.strip():
        raise ValueError(f"an empty summary personalizes nothing (pass None for the default answer), got {summary!r}")
    return [{"role": "system", "content": PERSONALIZE_INSTRUCTION.format(summary=summary.strip())}, *turns]


@torch.no_grad()
def generate_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    summaries: Sequence[str | None] | None = None,
    max_new_tokens: int = 48,
    temperature: float = 0.7,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
) -> list[str]:
    """One sampled answer per prompt (``summaries[i]`` in the instructions of prompt i, None or no list: the
    default answer), decoded without special tokens. Seeded inside `torch.random.fork_rng`, so the caller's RNG
    is left alone; the same seed gives the same answers for the same batches."""
    if summaries is not None and len(summaries) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(summaries)} summaries")
    if max_new_tokens < 1 or batch_size < 1 or not temperature > 0:
        raise ValueError(f"max_new_tokens, batch_size and temperature must be positive, got {max_new_tokens}, "
                         f"{batch_size}, {temperature}")  # fmt: skip
    texts = []
    for index, prompt in enumerate(prompts):
        try:
            messages = generator_messages(prompt, None if summaries is None else summaries[index])
        except ValueError as error:
            raise ValueError(f"prompt {index}: {error}") from None
        texts.append(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    device = next(model.parameters()).device
    end_ids = _end_ids(tokenizer, model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_ids[0]
    was_training = model.training
    model.eval()
    out = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for encoded in _encoded_batches(tokenizer, texts, batch_size, device, "generate_responses"):
            output = model.generate(
                **encoded, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_p=top_p,
                top_k=0, pad_token_id=pad_id, eos_token_id=end_ids,
            )  # fmt: skip
            generated = output[:, encoded.input_ids.shape[1] :]
            out.extend(text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True))
    model.train(was_training)
    return out


def _profiles(records: Sequence[dict], personalized: Sequence[str], default: Sequence[str]) -> list[dict]:
    """Each record's ``ground_truth.profile``, with an error naming a record that lacks one or a length mismatch."""
    if not len(records) == len(personalized) == len(default):
        raise ValueError(
            f"{len(records)} records, {len(personalized)} personalized and {len(default)} default answers"
        )
    profiles = []
    for index, record in enumerate(records):
        try:
            profiles.append(record["ground_truth"]["profile"])
        except (KeyError, TypeError):
            raise ValueError(f"record {index} ({record.get('user_id')!r}) has no ground_truth.profile") from None
    return profiles


def pets_outcomes(records: Sequence[dict], personalized: Sequence[str], default: Sequence[str]) -> list[float]:
    """The Pets user's comparison (`plus.judge.pairwise_outcome`) of each personalized answer against the
    default answer to the same prompt: 1 a win, 0 a loss, 0.5 a tie (same animal, or no single animal)."""
    profiles = _profiles(records, personalized, default)
    return [pairwise_outcome(pets_utility(mine, profile), pets_utility(plain, profile))
            for profile, mine, plain in zip(profiles, personalized, default, strict=True)]  # fmt: skip


def style_outcomes(
    records: Sequence[dict], personalized: Sequence[str], default: Sequence[str], judge: StyleJudge
) -> list[float]:
    """The attribute user's comparison of each personalized answer against the default answer to the same prompt,
    by their utilities under the style judge (`plus.judge.style_utility`): 1 a win, 0 a loss, 0.5 equal
    utilities. An empty answer (the generator ended at once) answers nothing: it loses to any non-empty answer and
    ties with another empty one."""
    profiles = _profiles(records, personalized, default)
    outcomes = []
    for profile, mine, plain in zip(profiles, personalized, default, strict=True):
        if not mine.strip() or not plain.strip():
            outcomes.append(0.5 if not mine.strip() and not plain.strip() else float(bool(mine.strip())))
            continue
        outcomes.append(pairwise_outcome(style_utility(mine, profile, judge), style_utility(plain, profile, judge)))
    return outcomes
