"""Judging generated text without an API: synthetic users know their preferences.

- `pets_subject` / `pets_utility`: which Pets animal a free-text response is about, and the user's utility for it
  (`plus.data.pets.pet_utility`); a response about no animal or about several is a tie with anything.
- `pairwise_outcome` / `win_rate`: the user's comparison of two responses (1 win, 0 loss, 0.5 tie) and the win
  rate over held-out prompts with a 95% bootstrap interval over seeds and prompts (`plus.evaluation`).
- `score_under_summary` / `edit_margins` / `edit_follows`: a reward model's margin on a pair under a summary given
  as text, and how often its ranking of the contested pairs follows an edit of the summary's key fact (the
  editing experiment of the PLUS paper's readable summaries, `plus.readable`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
from torch import nn

from plus.data.pets import ANIMALS, contested_animals, pet_utility

_ANIMAL_WORDS = {
    "dog": r"dogs?|pupp(?:y|ies)|canines?|hounds?|beagles?|retrievers?|greyhounds?",
    "cat": r"cats?|kittens?|kitty|kitties|felines?|maine coons?|siamese|persians?",
    "rabbit": r"rabbits?|bunn(?:y|ies)|lop-eared|netherland dwarfs?",
    "bird": r"birds?|parrots?|budgies?|canar(?:y|ies)|cockatiels?|cockatoos?|finch(?:es)?|lovebirds?|parakeets?"
    r"|doves?",
}
"""The words that name each Pets animal in free text: the animal, common synonyms and the breeds of the data
set's responses (`plus.data.pets.FACTS`)."""
assert set(_ANIMAL_WORDS) == set(ANIMALS)
_PATTERNS = {animal: re.compile(rf"\b(?:{words})\b", re.IGNORECASE) for animal, words in _ANIMAL_WORDS.items()}
_COORDINATED = 2
"""Words between two animals' names within which they are one phrase ("dogs and cats", "dogs or cats")."""


def _mentions(response: str) -> list[tuple[int, int, str]]:
    """(start, end, animal) of every animal name in ``response``, in order."""
    if not isinstance(response, str):
        raise TypeError(f"a response must be text, got {type(response).__name__}")
    found = [(m.start(), m.end(), a) for a, pattern in _PATTERNS.items() for m in pattern.finditer(response)]
    return sorted(found)


def pets_animals(response: str) -> set[str]:
    """The Pets animals (`plus.data.pets.ANIMALS`) a response names, by word (plurals, synonyms and breeds)."""
    return {animal for _, _, animal in _mentions(response)}


def pets_subject(response: str) -> str | None:
    """The animal a response is about: the one it names first, unless another animal is named in the same
    phrase (within `_COORDINATED` words: "dogs and cats make good pets") or none is named (None: no preference).
    A later mention ("a cat likes to watch birds") does not change the subject."""
    mentions = _mentions(response)
    if not mentions:
        return None
    _, end, first = mentions[0]
    for start, _, animal in mentions[1:]:
        if animal != first and len(response[end:start].split()) <= _COORDINATED:
            return None
    return first


def pets_utility(response: str, profile: dict[str, int]) -> float | None:
    """The user's utility for the response's subject (`pets_subject`); None (a tie with anything) when it has
    none: empty, about no animal, or about several at once."""
    missing = sorted(set(ANIMALS) - set(profile))
    if missing:
        raise ValueError(f"the Pets profile lacks utilities for {missing}")
    subject = pets_subject(response)
    return None if subject is None else float(pet_utility(profile, subject))


def pairwise_outcome(first: float | None, second: float | None) -> float:
    """The user's comparison of two judged responses: 1 when ``first`` has the higher utility, 0 the lower,
    0.5 a tie (equal utilities, or either response judged None)."""
    if first is None or second is None or first == second:
        return 0.5
    return 1.0 if first > second else 0.0


def win_rate(outcomes: Sequence[Sequence[float]], seed: int = 0) -> dict[str, float]:
    """``outcomes[s][i]``: `pairwise_outcome` of prompt i under seed s. The mean (ties count half), its 95%
    bootstrap interval over seeds and prompts (`plus.evaluation.bootstrap_interval`), the share of ties and n
    (prompts per seed)."""
    import numpy as np

    from plus.evaluation import bootstrap_interval

    table = [list(row) for row in outcomes]
    if not table or not all(table):
        raise ValueError("win_rate needs at least one seed with at least one judged prompt")
    values = np.concatenate([np.asarray(row, dtype=float) for row in table])
    if not np.isin(values, (0.0, 0.5, 1.0)).all():
        raise ValueError("win_rate outcomes must be 1 (win), 0 (loss) or 0.5 (tie)")
    low, high = bootstrap_interval(table, seed=seed)
    return {
        "mean": float(values.mean()), "ci_low": low, "ci_high": high, "ties": float((values == 0.5).mean()),
        "n": len(table[0]),
    }  # fmt: skip


def score_under_summary(reward_model: nn.Module, summary: str, prompt: str, chosen: str, rejected: str) -> float:
    """r(chosen | summary) - r(rejected | summary) for one pair under a summary written as text (yours, an edited
    one, a summarizer's): positive when the reward model ranks ``chosen`` first for that user."""
    from plus.coadapt.loop import RewardScorer, score_summaries

    for name, value in (("summary", summary), ("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"score_under_summary: {name} must be non-empty text, got {value!r}")
    record = {"reward_prompt": prompt, "chosen": chosen, "rejected": rejected}
    return float(score_summaries(RewardScorer(reward_model), [summary], [record], "reward", 1)[0])


def swap_pets_animal(summary: str, profile: dict[str, int]) -> str | None:
    """The summary with the user's two contested animals swapped (dogs <-> cats, each in its own form), or None
    when it names neither: the Pets edit of the key fact."""
    own, other = contested_animals(profile)
    patterns = {own: _PATTERNS[own], other: _PATTERNS[other]}
    if not any(p.search(summary) for p in patterns.values()):
        return None

    def swap(match: re.Match) -> str:
        word = match.group(0)
        target = other if patterns[own].fullmatch(word) else own
        replaced = target + ("s" if word.lower().endswith("s") else "")
        return replaced.capitalize() if word[0].isupper() else replaced

    combined = re.compile(f"{patterns[own].pattern}|{patterns[other].pattern}", re.IGNORECASE)
    return combined.sub(swap, summary)


def edit_margins(
    reward_model: nn.Module,
    records: Sequence[dict],
    summaries: Sequence[str],
    edit: Callable[[str, dict], str | None],
    batch_size: int = 16,
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """The editing experiment's raw scores on the contested held-out pairs: the indices of the records whose
    summary ``edit(summary, record)`` changes (None: nothing to edit, the pair is left out; an edit never turns a
    summary into an empty one, which is an error), and the reward
    model's margins on their ``eval`` pairs under each summary as written and as edited, (K,) each."""
    from plus.coadapt.loop import RewardScorer, score_summaries

    if len(records) != len(summaries):
        raise ValueError(f"{len(records)} records but {len(summaries)} summaries")
    kept, written, edited = [], [], []
    for index, (record, summary) in enumerate(zip(records, summaries, strict=True)):
        if record.get("contested") and (changed := edit(summary, record)) is not None:
            if not changed.strip():
                raise ValueError(f"the edit of record {index} ({record.get('user_id')!r}) left an empty summary")
            kept.append(index)
            written.append(summary)
            edited.append(changed)
    if not kept:
        raise ValueError("found no contested record whose summary the edit changes")
    pairs = [records[i] for i in kept]
    scorer = RewardScorer(reward_model)
    before = score_summaries(scorer, written, pairs, "eval", batch_size)
    after = score_summaries(scorer, edited, pairs, "eval", batch_size)
    return kept, before, after


def edit_follows(
    reward_model: nn.Module,
    records: Sequence[dict],
    summaries: Sequence[str],
    edit: Callable[[str, dict], str | None],
    batch_size: int = 16,
) -> dict[str, float]:
    """`edit_margins` in figures. ``follows``: the share of edited pairs whose ranking flips (the reward model
    reads the edited fact); ``accuracy_before`` / ``accuracy_after``: its accuracy under the written and the edited
    summaries; ``edited``: the pairs scored."""
    kept, before, after = edit_margins(reward_model, records, summaries, edit, batch_size)
    return {
        "follows": float(((before > 0) != (after > 0)).float().mean()),
        "accuracy_before": float((before > 0).float().mean()),
        "accuracy_after": float((after > 0).float().mean()),
        "edited": len(kept),
    }
