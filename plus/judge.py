"""Judging generated text without an API: synthetic users know their preferences.

- `pets_subject` / `pets_utility`: which Pets animal a free-text response is about, and the user's utility for it
  (`plus.data.pets.pet_utility`); a response about no animal or about several is a tie with anything.
- `pairwise_outcome` / `win_rate`: the user's comparison of two responses (1 win, 0 loss, 0.5 tie) and the win
  rate over held-out prompts with a 95% bootstrap interval over seeds and prompts (`plus.evaluation`).
- `score_under_summary` / `edit_margins` / `edit_follows`: a reward model's margin on a pair under a summary given
  as text, and how often its ranking of the contested pairs follows an edit of the summary's key fact (the
  editing experiment of the PLUS paper's readable summaries, `plus.readable`).
- `StyleJudge` / `fit_style_judge` / `style_scores` / `style_utility`: a score in {-1, 0, +1} for each of the
  attribute users' seven attributes (`plus.data.attributes`) of any free text, and a user's utility for it (the
  profile-weighted sum, as `plus.data.ground_truth_reward` computes it for the bank's responses). Exact measures
  where they exist (the length of the content for verbosity, a closing question for engagement, exclamation
  marks for enthusiasm), plain-English cue words elsewhere; the verbosity cuts are fitted on responses with known
  scores and `style_accuracy` validates every attribute on held-out ones (`fit_bank_judge`: fitted on one
  response bank, validated on the next).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


# ---------------------------------------------------------------------------------------------------------------
# The style judge: attribute scores of free text


def _cues(*phrases: str) -> re.Pattern:
    """One case-insensitive pattern matching any of ``phrases`` as whole words (a phrase may end in punctuation);
    straight and curly apostrophes alike."""
    words = [re.escape(p).replace("'", "['\u2019]") for p in phrases]
    return re.compile(r"(?<![\w'\u2019])(?:" + "|".join(words) + r")(?![\w'\u2019])", re.IGNORECASE)


_CONTRACTIONS = _cues(
    "it's", "that's", "here's", "there's", "what's", "let's", "i'm", "you're", "we're", "they're", "don't",
    "doesn't", "didn't", "can't", "won't", "isn't", "aren't", "wasn't", "i'll", "you'll", "i've", "you've",
)  # fmt: skip
STYLE_CUES: dict[str, tuple[re.Pattern, re.Pattern]] = {
    "formality": (
        _cues("regarding", "furthermore", "moreover", "therefore", "thus", "hence", "consequently", "accordingly",
              "in response to", "enquiry", "inquiry", "kindly", "pertaining to", "one should"),
        _cues("okay", "ok", "alright", "basically", "yeah", "hey", "gonna", "wanna", "kinda", "stuff", "cool",
              "the deal", "so basically"),
    ),
    "humor": (
        _cues("joke", "jokes", "joking", "funny", "haha", "lol", "pun", "kidding", "laugh", "hilarious",
              "rocket science", "bonus:"),
        _cues("serious", "seriously"),
    ),
    "engagement": (
        re.compile(r"\?(?=(?:[^.!?]*[.!?]){0,2}[^.!?]*$)"),  # a question mark in the last three sentences
        _cues("that is all", "that's all", "that's it", "nothing more to say", "end of answer", "no more to add"),
    ),
    "politeness": (
        _cues("thank", "thanks", "thank you", "please", "hope this helps", "happy to help", "glad to help",
              "you're welcome"),
        _cues("obvious", "obviously", "stupid", "dumb", "stop asking", "work it out", "figure it out",
              "looked this up", "whatever", "ridiculous"),
    ),
    "enthusiasm": (
        re.compile(r"!|" + _cues("i love", "great question", "amazing", "exciting", "fantastic", "wonderful",
                                  "awesome", "fun").pattern, re.IGNORECASE),
        _cues("modest", "quietly", "humbly", "if i may", "reserved"),
    ),
    "confidence": (
        _cues("definitely", "certainly", "without a doubt", "undoubtedly", "absolutely", "surely", "certain",
              "clearly", "no doubt"),
        _cues("might", "perhaps", "maybe", "not sure", "not entirely sure", "possibly", "i think", "i guess",
              "i believe", "probably"),
    ),
}  # fmt: skip
"""For each attribute but verbosity: a pattern of the first pole's cues (score +1, e.g. formal) and one of the
second's (-1, e.g. informal); informal also counts contractions. The score is the sign of (first-pole matches -
second-pole matches). The cue words are general English, not the response bank's sentences, so they also read
free text; `style_accuracy` reports how much of the bank they read."""


_SENTENCES = re.compile(r"[^.!?]+[.!?]*")
STYLE_LINE_WORDS = 6
"""A sentence with a style cue and at most this many words after it carries no content (`content_words`)."""


def content_words(response: str) -> int:
    """The length of what ``response`` says, not of how it says it: per sentence, the words after its last style
    cue (`STYLE_CUES`; a lead-in such as "I might be wrong, but perhaps" is not content), and none for a sentence
    whose words after the cue are at most `STYLE_LINE_WORDS` (a style line: "Thank you for asking.")."""
    cues = [pattern for pair in STYLE_CUES.values() for pattern in pair] + [_CONTRACTIONS]
    total = 0
    for sentence in _SENTENCES.findall(response):
        start = max((m.end() for p in cues for m in p.finditer(sentence)), default=None)
        if start is None:
            total += len(sentence.split())
        elif len(rest := sentence[start:].split()) > STYLE_LINE_WORDS:
            total += len(rest)
    return total


@dataclass(frozen=True)
class StyleJudge:
    """Verbosity by `content_words`: at most ``short_words`` -> -1 (concise), at least ``long_words`` -> +1
    (verbose), 0 between; the other attributes by `STYLE_CUES`."""

    short_words: int
    long_words: int

    def __post_init__(self) -> None:
        if not 0 <= self.short_words < self.long_words:
            raise ValueError(f"StyleJudge needs 0 <= short_words < long_words, got {self.short_words}, "
                             f"{self.long_words}")  # fmt: skip


def style_scores(response: str, judge: StyleJudge) -> dict[str, int]:
    """The judge's score in {-1, 0, +1} of every attribute (`plus.data.attributes.ATTRIBUTES`) of ``response``."""
    from plus.data.attributes import ATTRIBUTES

    if not isinstance(response, str) or not response.strip():
        raise ValueError(f"the style judge needs a non-empty response, got {response!r}")
    words = content_words(response)
    scores = {"verbosity": 1 if words >= judge.long_words else -1 if words <= judge.short_words else 0}
    for attribute, (first, second) in STYLE_CUES.items():
        count = len(first.findall(response)) - len(second.findall(response))
        if attribute == "formality":
            count -= len(_CONTRACTIONS.findall(response))
        scores[attribute] = (count > 0) - (count < 0)
    return {a: scores[a] for a in ATTRIBUTES}


def style_utility(response: str, profile: dict[str, float], judge: StyleJudge) -> float:
    """The user's utility for ``response``: sum over attributes of profile weight x the judge's score."""
    scores = style_scores(response, judge)
    unknown = sorted(set(profile) - set(scores))
    if unknown:
        raise ValueError(f"the profile names attributes the style judge does not score: {unknown}")
    return float(sum(weight * scores[a] for a, weight in profile.items()))


def fit_style_judge(texts: Sequence[str], verbosity: Sequence[int]) -> StyleJudge:
    """The verbosity cuts that score the most of ``texts`` right against their known verbosity scores (in
    {-1, 0, +1}); every pair of cuts between observed word counts is tried."""
    if len(texts) != len(verbosity) or not texts:
        raise ValueError(f"fit_style_judge needs as many known scores as texts, got {len(texts)} and {len(verbosity)}")
    words = [content_words(t) for t in texts]
    cuts = sorted(set(words))
    best, best_correct = None, -1
    for i, short in enumerate(cuts[:-1]):
        for long in cuts[i + 1 :]:
            correct = sum(
                (1 if w >= long else -1 if w <= short else 0) == v for w, v in zip(words, verbosity, strict=True)
            )
            if correct > best_correct:
                best, best_correct = StyleJudge(short, long), correct
    if best is None:
        raise ValueError("fit_style_judge needs texts of at least two different lengths")
    return best


def style_correct(judge: StyleJudge, texts: Sequence[str], scores: Sequence[dict[str, int]]) -> dict[str, list[float]]:
    """Per attribute, 1.0 for each of ``texts`` whose judged score equals the known one, else 0.0."""
    if len(texts) != len(scores) or not texts:
        raise ValueError(f"the style judge needs as many known scores as texts, got {len(texts)} and {len(scores)}")
    judged = [style_scores(t, judge) for t in texts]
    return {a: [float(j[a] == s[a]) for j, s in zip(judged, scores, strict=True)] for a in scores[0]}


def style_accuracy(judge: StyleJudge, texts: Sequence[str], scores: Sequence[dict[str, int]]) -> dict[str, float]:
    """Per attribute, the share of ``texts`` whose judged score equals the known one (`style_correct`)."""
    return {a: sum(hits) / len(hits) for a, hits in style_correct(judge, texts, scores).items()}


_POLE_WORDS: dict[str, tuple[str, ...]] = {
    "verbose": ("verbose", "long", "lengthy", "detail", "details", "detailed", "thorough", "comprehensive",
                "in-depth", "elaborate", "full picture"),
    "concise": ("concise", "short", "brief", "succinct", "terse", "to the point", "to-the-point", "key point"),
    "formal": ("formal", "professional", "businesslike"),
    "informal": ("informal", "casual", "chatty", "relaxed", "like a friend"),
    "humorous": ("humorous", "humour", "humor", "funny", "joke", "jokes", "witty", "fun"),
    "serious": ("serious", "seriously", "sober"),
    "engaging": ("engaging", "ask me", "questions back", "follow-up questions", "invite me", "invite a reply",
                 "inviting", "draw them in"),
    "unengaging": ("unengaging", "end flatly"),
    "polite": ("polite", "politeness", "courteous", "courtesy"),
    "rude": ("rude", "blunt", "harsh", "impolite", "straight talk"),
    "enthusiastic": ("enthusiastic", "enthusiasm", "upbeat", "excited", "energy", "energetic"),
    "demure": ("demure", "modest", "calm", "quiet", "reserved", "understated"),
    "confident": ("confident", "assertive", "conviction", "sure of themselves", "certainty"),
    "uncertain": ("uncertain", "doubt", "hedge", "hedged", "tentative", "unsure", "caution", "cautious"),
}  # fmt: skip
"""The words that name each attribute pole (`plus.data.attributes.POLES`) when a text describes a user's taste:
the pole, plain synonyms, and the words of the data sets' descriptions and user guides."""
_POLE_PATTERNS = {pole: _cues(*words) for pole, words in _POLE_WORDS.items()}
_NEGATED = re.compile(
    r"(?<![\w'\u2019])(?:no|not|never|without|don['\u2019]t|doesn['\u2019]t)(?:\W+[\w'\u2019-]+){0,2}\W*$",
    re.IGNORECASE,
)
"""A negation ending at most two words before the end of a clause's text."""
_CLAUSE = re.compile(r"[.;:!?]")


def style_poles(text: str) -> set[str]:
    """The attribute poles a text names as a taste, by word (`_POLE_WORDS`): a pole's word negated within its
    clause ("no", "not", "without" up to two words before: "no jokes", "without extra detail") names the opposite
    pole. A word list, not a reader: it sees words, not whether they describe the user."""
    from plus.data.attributes import opposite_pole

    if not isinstance(text, str):
        raise TypeError(f"a text must be text, got {type(text).__name__}")
    named = set()
    for pole, pattern in _POLE_PATTERNS.items():
        for match in pattern.finditer(text):
            clause = _CLAUSE.split(text[: match.start()])[-1]
            named.add(opposite_pole(pole) if _NEGATED.search(clause) else pole)
    return named


def swap_style_poles(summary: str, poles: Sequence[str]) -> str | None:
    """The summary with each of ``poles`` and its opposite swapped, or None when it names neither (`style_poles`):
    the style edit of the key fact. A pole's description (`plus.data.attributes.POLE_DESCRIPTIONS`, the words of
    the true description: "long, detailed answers") becomes the opposite's ("short, to-the-point answers"); any
    other word of either pole becomes the other pole's name ("detailed" -> "concise"), in one pass."""
    from plus.data.attributes import POLE_DESCRIPTIONS, opposite_pole

    if not isinstance(summary, str):
        raise TypeError(f"a summary must be text, got {type(summary).__name__}")
    ends = {pole: opposite_pole(pole) for pole in poles} | {opposite_pole(pole): pole for pole in poles}
    if not ends.keys() & style_poles(summary) and not any(POLE_DESCRIPTIONS[p] in summary for p in ends):
        return None
    phrases = {POLE_DESCRIPTIONS[pole]: ends[pole] for pole in ends}
    words = {word: pole for pole in ends for word in _POLE_WORDS[pole]}
    alternatives = sorted([*phrases, *words], key=len, reverse=True)  # a description before its words
    pattern = _cues(*alternatives)

    def swap(match: re.Match) -> str:
        text = match.group(0).lower()
        if text in phrases:
            return POLE_DESCRIPTIONS[phrases[text]]
        return ends[words[text]]

    return pattern.sub(swap, summary)


def fit_bank_judge(bank_seed: int = 0) -> tuple[StyleJudge, dict[str, dict]]:
    """The judge fitted on the response bank of seed ``bank_seed`` (`plus.data.attributes.build_response_bank`),
    and per attribute its accuracy on the next seed's bank: ``{"mean", "ci_low", "ci_high", "n", "reported"}``,
    a 95% bootstrap interval over those responses (``reported`` None: no paper reports it)."""
    from plus.data.attributes import ATTRIBUTES, build_response_bank
    from plus.evaluation import bootstrap_interval

    fit = [r for rs in build_response_bank(bank_seed).responses.values() for r in rs]
    held = [r for rs in build_response_bank(bank_seed + 1).responses.values() for r in rs]
    judge = fit_style_judge([r.text for r in fit], [r.scores["verbosity"] for r in fit])
    correct = style_correct(judge, [r.text for r in held], [r.scores for r in held])
    accuracy = {}
    for attribute in ATTRIBUTES:
        low, high = bootstrap_interval([correct[attribute]])
        accuracy[attribute] = {"mean": sum(correct[attribute]) / len(held), "ci_low": low, "ci_high": high,
                               "n": len(held), "reported": None}  # fmt: skip
    return judge, accuracy
