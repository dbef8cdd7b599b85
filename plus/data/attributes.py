"""Synthetic users with known ground truth over named response attributes (PReF's seven, two poles each).

**Responses.** For every prompt of `plus.data.topics` a `ResponseBank` holds ``num_candidates`` responses composed
from a grammar: each response draws a score in {-1, 0, +1} for every attribute of `ATTRIBUTES` and is realised
with the matching surface markers (+1 = the first pole of `POLES`, -1 = the second, 0 = no marker):

=============== =========================================================================================
verbosity       three content sentences and a summing-up line / two sentences / one sentence
formality       a formal opener / none / a casual opener and contractions
humor           a joke line / none / a line insisting on seriousness
engagement      a closing question to the user / none / a flat closing line
politeness      thanks and a courteous closing / none / a rude opener and closing
enthusiasm      an excited opener / none / a reserved opener
confidence      an assertive lead-in / none / a hedging lead-in
=============== =========================================================================================

The scores are the ground truth: `ground_truth_reward(profile, response)` = sum over attributes of
``profile[a] * scores[a]``, for ANY response of the bank (``bank.scores_of(text)`` looks a text up), which is what
best-of-N win rates and the Oracle baseline need. A user's ``ground_truth`` is ``{"profile": {attribute: weight},
"description": ..., "poles": [...]}``; every label is ``chosen`` = the response with the higher reward, and a pair
the user is indifferent to (equal reward) is never given to that user.

**Populations.**

- ``uf-p-2`` / ``uf-p-4`` (`build_attribute_users`): UF-P-like; a user is one attribute pole (``verbose`` and
  ``formal``; plus ``polite`` and ``confident`` for four users) and, as in UF-P, only pairs on which the users
  disagree are kept (``contested_share=1.0``; a smaller share mixes in pairs every user orders the same way).
  Contexts are 2-4 labelled pairs of the same user. Splits: ``train``; ``test`` (seen users, held-out pairs of
  the train prompts, 10%); ``test_new_prompts`` (seen users, held-out prompts); ``test_new_users`` (users who
  value an attribute no train user does: ``humorous`` and ``engaging``, on held-out pairs).
- ``attributes`` (`build_pref_attributes`): PReF's population, a user = two poles of different attributes (84
  users). A shared pool of pairs (``pair_id``) is answered by many users, so `label_matrix` gives the pair x user
  matrix. Each seen user answers ``num_answers`` pool pairs (``train``, ``role="answer"``) and ``num_heldout``
  others (``test``, ``role="heldout"``); ``num_new_users`` held-out users do the same in ``test_new_users``; seen
  users answer pairs of held-out prompts in ``test_new_prompts``. One record = one answer: its train and eval
  pair are the answered pair and its context 2-4 other answers of the same user.
- ``archetypes`` (`build_pref_archetypes`): the same shared-pool form, but each of 84 users is a mixture (Dirichlet
  weights) of three latent `ARCHETYPES` that share attributes, so the users' rewards have rank 3 and correlated
  attribute weights, where the 84 two-pole users of ``attributes`` span all seven attributes and are
  mirror-symmetric (every user's opposite is also a user).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from plus.data.schema import majority_credit, make_record
from plus.data.topics import TOPICS

ATTRIBUTES: tuple[str, ...] = (
    "verbosity",
    "formality",
    "humor",
    "engagement",
    "politeness",
    "enthusiasm",
    "confidence",
)
POLES: dict[str, tuple[str, str]] = {
    "verbosity": ("verbose", "concise"),
    "formality": ("formal", "informal"),
    "humor": ("humorous", "serious"),
    "engagement": ("engaging", "unengaging"),
    "politeness": ("polite", "rude"),
    "enthusiasm": ("enthusiastic", "demure"),
    "confidence": ("confident", "uncertain"),
}
POLE_DESCRIPTIONS: dict[str, str] = {
    "verbose": "long, detailed answers",
    "concise": "short, to-the-point answers",
    "formal": "a formal, professional register",
    "informal": "a casual, chatty register",
    "humorous": "a touch of humour",
    "serious": "a serious tone without jokes",
    "engaging": "answers that draw them in and invite a reply",
    "unengaging": "answers that end flatly without inviting more conversation",
    "polite": "courteous, polite wording",
    "rude": "blunt, rude wording",
    "enthusiastic": "an enthusiastic, upbeat voice",
    "demure": "a quiet, reserved voice",
    "confident": "confident, assertive statements",
    "uncertain": "hedged, tentative statements",
}
UF_POPULATIONS: dict[str, tuple[str, ...]] = {
    "uf-p-2": ("verbose", "formal"),
    "uf-p-4": ("verbose", "formal", "polite", "confident"),
}
UF_NEW_USERS: tuple[str, ...] = ("humorous", "engaging")

# Surface markers: variants per (attribute, score).
_OPENERS = {
    ("enthusiasm", 1): ["Great question!", "Oh, I love this one!", "What a fun thing to ask about!"],
    ("enthusiasm", -1): ["If I may, here is a modest answer.", "Quietly, here is what I can offer."],
    ("politeness", 1): ["Thank you for asking.", "Thanks so much for the thoughtful question."],
    ("politeness", -1): ["Honestly, you could have looked this up yourself.", "Fine, since you cannot work it out."],
    ("formality", 1): ["Regarding your question:", "In response to your enquiry:"],
    ("formality", -1): ["Okay, so basically:", "Alright, here is the deal:"],
}
_LEADS = {
    ("confidence", 1): ["Without a doubt, ", "I am certain of this: ", "Definitely, "],
    ("confidence", -1): ["I am not entirely sure, but I think ", "I might be wrong, but perhaps "],
}
_CLOSERS = {
    ("humor", 1): [
        "(I asked my cat for a second opinion, but she just yawned.)",
        "Bonus: you can now impress absolutely nobody at parties with this.",
        "It is not rocket science, unless you were asking about rockets.",
    ],
    ("humor", -1): ["This deserves to be taken seriously.", "It is a serious matter and worth getting right."],
    ("verbosity", 1): [
        "To sum up, each of these points matters, and together they cover the essentials.",
        "Taken together, these points give you a complete picture of the topic.",
    ],
    ("engagement", 1): [
        "What made you curious about this?",
        "Have you tried any of this yourself? I would love to hear how it goes.",
        "Which part would you like to explore next?",
    ],
    ("engagement", -1): ["That is all.", "Nothing more to say about it.", "End of answer."],
    ("politeness", 1): [
        "I hope this helps, and please let me know if anything is unclear.",
        "Please feel free to ask if you would like more detail.",
    ],
    ("politeness", -1): ["Try to remember it this time.", "Now stop asking obvious questions."],
}
_CONTRACTIONS = [
    (r"\bit is\b", "it's"),
    (r"\bIt is\b", "It's"),
    (r"\bdo not\b", "don't"),
    (r"\bdoes not\b", "doesn't"),
    (r"\bcannot\b", "can't"),
    (r"\byou are\b", "you're"),
    (r"\bI am\b", "I'm"),
    (r"\bthat is\b", "that's"),
    (r"\bThat is\b", "That's"),
    (r"\bhere is\b", "here's"),
]


@dataclass(frozen=True)
class Response:
    """One candidate response and its attribute scores (each in {-1, 0, +1})."""

    prompt_id: str
    index: int
    text: str
    scores: dict[str, int]


@dataclass(frozen=True)
class ResponseBank:
    """Candidate responses per prompt with known attribute scores; built by `build_response_bank`."""

    prompts: dict[str, str]
    """prompt id -> prompt text."""
    responses: dict[str, list[Response]]
    """prompt id -> its candidates."""

    def scores_of(self, text: str) -> dict[str, int]:
        """The attribute scores of a response text of this bank."""
        for candidates in self.responses.values():
            for response in candidates:
                if response.text == text:
                    return response.scores
        raise KeyError(f"Response not in the bank: {text[:80]!r}")


def _realise(content: list[str], scores: dict[str, int], rng: random.Random) -> str:
    num_sentences = {1: 3, 0: 2, -1: 1}[scores["verbosity"]]
    body = list(content[:num_sentences])
    lead_key = ("confidence", scores["confidence"])
    if lead_key in _LEADS:
        body[0] = rng.choice(_LEADS[lead_key]) + body[0][0].lower() + body[0][1:]
    parts = [rng.choice(_OPENERS[key]) for key in _keys(_OPENERS, scores)]
    parts += body
    parts += [rng.choice(_CLOSERS[key]) for key in _keys(_CLOSERS, scores)]
    text = " ".join(parts)
    if scores["formality"] == -1:
        for pattern, short in _CONTRACTIONS:
            text = re.sub(pattern, short, text)
    return text


def _keys(table: dict, scores: dict[str, int]) -> list[tuple[str, int]]:
    return [key for key in table if scores[key[0]] == key[1]]


def build_response_bank(seed: int = 0, num_candidates: int = 24) -> ResponseBank:
    """``num_candidates`` distinct responses for each prompt of `TOPICS` (prompt ids ``t00``...), scores drawn
    uniformly from {-1, 0, +1}^7. Deterministic in ``seed``."""
    if num_candidates < 2:
        raise ValueError(f"num_candidates must be at least 2, got {num_candidates}")
    rng = random.Random(f"bank-{seed}")
    prompts, responses = {}, {}
    for t, (question, content) in enumerate(TOPICS):
        prompt_id = f"t{t:02d}"
        prompts[prompt_id] = question
        texts, candidates = set(), []
        while len(candidates) < num_candidates:
            scores = {a: rng.choice((-1, 0, 1)) for a in ATTRIBUTES}
            text = _realise(content, scores, rng)
            if text not in texts:
                texts.add(text)
                candidates.append(Response(prompt_id, len(candidates), text, scores))
        responses[prompt_id] = candidates
    return ResponseBank(prompts, responses)


def opposite_pole(pole: str) -> str:
    """The other end of ``pole``'s attribute (`POLES`): verbose -> concise, rude -> polite."""
    for first, second in POLES.values():
        if pole in (first, second):
            return second if pole == first else first
    raise ValueError(
        f"unknown attribute pole {pole!r}; the poles are {', '.join(p for ends in POLES.values() for p in ends)}"
    )


def pole_profile(*poles: str) -> dict[str, float]:
    """The profile of a user who values ``poles``: weight +1 (first pole) or -1 (second) on their attributes,
    0 elsewhere; keys are all of `ATTRIBUTES`."""
    profile = dict.fromkeys(ATTRIBUTES, 0.0)
    for pole in poles:
        attribute = next((a for a, ends in POLES.items() if pole in ends), None)
        if attribute is None:
            raise ValueError(f"Unknown pole {pole!r}; choose from {sorted(POLE_DESCRIPTIONS)}")
        if profile[attribute] != 0:
            raise ValueError(f"Poles {poles} name attribute {attribute!r} twice")
        profile[attribute] = 1.0 if POLES[attribute][0] == pole else -1.0
    return profile


def user_ground_truth(*poles: str) -> dict:
    """``{"profile", "description", "poles"}`` of a user who values ``poles``."""
    wants = " and ".join(POLE_DESCRIPTIONS[p] for p in poles)
    return {"profile": pole_profile(*poles), "description": f"This user prefers {wants}.", "poles": list(poles)}


def ground_truth_reward(profile: dict[str, float], response: Response | dict[str, int]) -> float:
    """A user's true reward of a response: ``profile . scores`` (``response`` a `Response` or its scores), rounded
    to 9 decimals so that float noise in fractional weights (archetype mixtures) never breaks a true tie."""
    scores = response.scores if isinstance(response, Response) else response
    return round(float(sum(weight * scores[a] for a, weight in profile.items() if weight)), 9)


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _orient(prompt: str, a: Response, b: Response, profile: dict[str, float]) -> dict:
    first = ground_truth_reward(profile, a) > ground_truth_reward(profile, b)
    chosen, rejected = (a, b) if first else (b, a)
    return {"prompt": prompt, "chosen": chosen.text, "rejected": rejected.text}


def _disagree(pair: tuple[Response, Response], profiles: list[dict[str, float]]) -> bool:
    signs = {_sign(ground_truth_reward(p, pair[0]) - ground_truth_reward(p, pair[1])) for p in profiles}
    return 1 in signs and -1 in signs


def _pair_id(a: Response, b: Response) -> str:
    return f"{a.prompt_id}:{min(a.index, b.index)}-{max(a.index, b.index)}"


def _split_prompts(bank: ResponseBank, num_heldout_prompts: int, seed: int) -> tuple[list[str], list[str]]:
    ids = sorted(bank.prompts)
    if not 0 < num_heldout_prompts < len(ids):
        raise ValueError(f"num_heldout_prompts must be in [1, {len(ids) - 1}], got {num_heldout_prompts}")
    random.Random(f"prompts-{seed}").shuffle(ids)
    return sorted(ids[num_heldout_prompts:]), sorted(ids[:num_heldout_prompts])


def build_attribute_users(
    population: str = "uf-p-2",
    seed: int = 0,
    num_train: int = 1024,
    num_test: int = 200,
    num_candidates: int = 24,
    num_heldout_prompts: int = 8,
    test_pair_fraction: float = 0.1,
    contested_share: float = 1.0,
    context_sizes: tuple[int, int] = (2, 4),
) -> list[dict]:
    """UF-P-like synthetic users (``population`` ``uf-p-2`` or ``uf-p-4``); ``dataset`` = ``<population>-synthetic``.

    ``num_train`` records in ``train`` and ``num_test`` in each of ``test``, ``test_new_prompts`` and
    ``test_new_users``, users taking turns. Deterministic in ``seed``.
    """
    if population not in UF_POPULATIONS:
        raise ValueError(f"Unknown population {population!r}; choose one of {sorted(UF_POPULATIONS)}")
    if not 0.0 <= contested_share <= 1.0 or not 0.0 < test_pair_fraction < 1.0:
        raise ValueError(
            f"Need contested_share in [0, 1] and test_pair_fraction in (0, 1), got "
            f"{contested_share}, {test_pair_fraction}"
        )
    low, high = context_sizes
    if not 1 <= low <= high:
        raise ValueError(f"context_sizes must be (low, high) with 1 <= low <= high, got {context_sizes}")
    bank = build_response_bank(seed, num_candidates)
    train_prompts, heldout_prompts = _split_prompts(bank, num_heldout_prompts, seed)
    rng = random.Random(f"{population}-{seed}")
    seen = list(UF_POPULATIONS[population])
    seen_profiles = [pole_profile(p) for p in seen]
    # Pair pools: (prompt id, a, b) split into train / test pairs on train prompts, and held-out prompts.
    pools: dict[str, dict[bool, list]] = {name: {True: [], False: []} for name in ("train", "test", "new_prompts")}
    for prompt_id in sorted(bank.prompts):
        for a, b in combinations(bank.responses[prompt_id], 2):
            disagree = _disagree((a, b), seen_profiles)
            agree = not disagree and all(ground_truth_reward(p, a) != ground_truth_reward(p, b) for p in seen_profiles)
            if not (disagree or agree):
                continue
            if prompt_id in heldout_prompts:
                pool = "new_prompts"
            else:
                pool = "test" if rng.random() < test_pair_fraction else "train"
            pools[pool][disagree].append((prompt_id, a, b))
    dataset = f"{population}-synthetic"
    plans = [
        ("train", seen, "train", num_train),
        ("test", seen, "test", num_test),
        ("test_new_prompts", seen, "new_prompts", num_test),
        ("test_new_users", list(UF_NEW_USERS), "test", num_test),
    ]
    records = []
    for split, users, pool_name, size in plans:
        for i in range(size):
            user = users[i % len(users)]
            truth = user_ground_truth(user)
            profile = truth["profile"]

            def draw(pool=pools[pool_name], profile=profile, pool_name=pool_name) -> tuple[dict, bool, str, tuple]:
                while True:
                    contested = rng.random() < contested_share
                    if not pool[contested]:
                        raise ValueError(f"No {'contested' if contested else 'agreed'} pairs in pool {pool_name!r}")
                    prompt_id, a, b = rng.choice(pool[contested])
                    if ground_truth_reward(profile, a) != ground_truth_reward(profile, b):
                        pair = _orient(bank.prompts[prompt_id], a, b, profile)
                        oriented = (a, b) if pair["chosen"] == a.text else (b, a)
                        return pair, contested, _pair_id(a, b), oriented

            train_pair, train_contested, _, _ = draw()
            eval_pair, eval_contested, eval_id, (chosen, rejected) = draw()
            used, context = {eval_id}, []
            for _ in range(rng.randint(low, high)):
                pair, _, pair_id, _ = draw()
                while pair_id in used:
                    pair, _, pair_id, _ = draw()
                used.add(pair_id)
                context.append(pair)
            records.append(
                make_record(
                    dataset=dataset,
                    split=split,
                    user_id=user,
                    context_pairs=context,
                    context_flips=[rng.random() < 0.5 for _ in context],
                    train=train_pair,
                    eval=eval_pair,
                    ground_truth=truth,
                    contested=eval_contested,
                    train_contested=train_contested,
                    pair_id=eval_id,
                    prompt_id=eval_id.split(":")[0],
                    majority_credit=majority_credit(
                        (ground_truth_reward(p, chosen), ground_truth_reward(p, rejected)) for p in seen_profiles
                    ),
                )
            )
    return records


def pref_users() -> list[tuple[str, str]]:
    """PReF's 84 users: every unordered pair of poles of two different attributes."""
    poles = [(a, p) for a in ATTRIBUTES for p in POLES[a]]
    return [(p, q) for (a, p), (b, q) in combinations(poles, 2) if a != b]


ARCHETYPES: dict[str, dict[str, float]] = {
    "professional": {"formality": 1.0, "politeness": 1.0, "confidence": 1.0, "humor": -1.0},
    "entertainer": {"humor": 1.0, "enthusiasm": 1.0, "engagement": 1.0, "formality": -1.0},
    "minimalist": {"verbosity": -1.0, "engagement": -1.0, "enthusiasm": -1.0},
}
"""The latent archetypes of the ``archetypes`` population: weights over `ATTRIBUTES` (absent = 0). They share
attributes (formality, humour, engagement, enthusiasm), so a user's attribute weights are correlated."""


def archetype_ground_truth(weights: dict[str, float]) -> dict:
    """``{"profile", "description", "poles", "archetypes"}`` of a user mixing `ARCHETYPES` with ``weights``
    (non-negative, summing to 1): the profile is the weighted sum of the archetypes' profiles; ``poles`` are
    the two attribute poles of largest weight."""
    if set(weights) - set(ARCHETYPES) or any(w < 0 for w in weights.values()) or abs(sum(weights.values()) - 1) > 1e-6:
        raise ValueError(
            f"Archetype weights must be non-negative over {sorted(ARCHETYPES)} and sum to 1, got {weights}"
        )
    profile = dict.fromkeys(ATTRIBUTES, 0.0)
    for name, weight in weights.items():
        for attribute, value in ARCHETYPES[name].items():
            profile[attribute] = round(profile[attribute] + weight * value, 6)
    ranked = sorted((a for a in ATTRIBUTES if profile[a]), key=lambda a: (-abs(profile[a]), a))[:2]
    poles = [POLES[a][0] if profile[a] > 0 else POLES[a][1] for a in ranked]
    mix = ", ".join(f"{round(100 * w)}% {name}" for name, w in sorted(weights.items(), key=lambda x: -x[1]) if w)
    wants = " and ".join(POLE_DESCRIPTIONS[p] for p in poles)
    return {
        "profile": profile,
        "description": f"This user is {mix}; above all they prefer {wants}.",
        "poles": poles,
        "archetypes": dict(weights),
    }


def archetype_users(num_users: int = 84, seed: int = 0, concentration: float = 0.5) -> list[tuple[str, dict]]:
    """``num_users`` users (id, ground truth) whose archetype weights are drawn from a symmetric Dirichlet
    (``concentration``; small values give users close to one archetype), rounded to hundredths. Every profile
    lies in the span of the three archetypes, so the users' rewards have rank 3."""
    if num_users < 2 or not concentration > 0:
        raise ValueError(f"Need num_users >= 2 and concentration > 0, got {num_users}, {concentration}")
    rng = np.random.default_rng([seed, 7_919])
    names = sorted(ARCHETYPES)
    users = []
    for index in range(num_users):
        draw = np.round(rng.dirichlet([concentration] * len(names)), 2)
        draw[int(draw.argmax())] += round(1.0 - float(draw.sum()), 2)  # exact hundredths summing to 1
        weights = {name: float(round(w, 2)) for name, w in zip(names, draw, strict=True)}
        users.append((f"mix-{index:03d}", archetype_ground_truth(weights)))
    return users


def build_pref_attributes(
    seed: int = 0,
    num_answers: int = 40,
    num_heldout: int = 10,
    num_new_users: int = 20,
    num_pairs: int = 400,
    num_candidates: int = 24,
    num_heldout_prompts: int = 8,
    context_sizes: tuple[int, int] = (2, 4),
) -> list[dict]:
    """PReF's Attributes population (``dataset`` = ``attributes``): 84 two-pole users answering a shared pool of
    ``num_pairs`` pairs (``num_pairs // 4`` more on held-out prompts). Deterministic in ``seed``."""
    users = [("+".join(poles), user_ground_truth(*poles)) for poles in pref_users()]
    return _build_pref_population(
        "attributes", users, f"attributes-{seed}", seed, num_answers, num_heldout, num_new_users, num_pairs,
        num_candidates, num_heldout_prompts, context_sizes,
    )  # fmt: skip


def build_pref_archetypes(
    seed: int = 0,
    num_answers: int = 40,
    num_heldout: int = 10,
    num_new_users: int = 20,
    num_pairs: int = 400,
    num_candidates: int = 24,
    num_heldout_prompts: int = 8,
    context_sizes: tuple[int, int] = (2, 4),
    num_users: int = 84,
    concentration: float = 0.5,
) -> list[dict]:
    """The Archetypes population (``dataset`` = ``archetypes``): as `build_pref_attributes`, but the ``num_users``
    users are mixtures of the three `ARCHETYPES` (`archetype_users`), so their rewards share a rank-3 structure
    and are not mirror-symmetric. Deterministic in ``seed``."""
    return _build_pref_population(
        "archetypes", archetype_users(num_users, seed, concentration), f"archetypes-{seed}", seed, num_answers,
        num_heldout, num_new_users, num_pairs, num_candidates, num_heldout_prompts, context_sizes,
    )  # fmt: skip


def _build_pref_population(
    dataset: str,
    users: list[tuple[str, dict]],
    rng_seed: str,
    seed: int,
    num_answers: int,
    num_heldout: int,
    num_new_users: int,
    num_pairs: int,
    num_candidates: int,
    num_heldout_prompts: int,
    context_sizes: tuple[int, int],
) -> list[dict]:
    """The records of a PReF population: ``users`` (id, ground truth) answering a shared pool of pairs."""
    if not 0 <= num_new_users < len(users):
        raise ValueError(f"num_new_users must be in [0, {len(users) - 1}], got {num_new_users}")
    low, high = context_sizes
    if not 1 <= low <= high or high >= num_answers + 1:
        raise ValueError(f"context_sizes must satisfy 1 <= low <= high <= num_answers, got {context_sizes}")
    bank = build_response_bank(seed, num_candidates)
    train_prompts, heldout_prompts = _split_prompts(bank, num_heldout_prompts, seed)
    rng = random.Random(rng_seed)
    order = [user_id for user_id, _ in users]
    rng.shuffle(order)
    new_users = set(order[:num_new_users])
    all_profiles = [truth["profile"] for _, truth in users]

    def sample_pool(prompt_ids: list[str], size: int) -> list[tuple[str, Response, Response]]:
        candidates = [(p, a, b) for p in prompt_ids for a, b in combinations(bank.responses[p], 2)]
        if size > len(candidates):
            raise ValueError(f"Asked for {size} pairs but the prompts only have {len(candidates)}")
        return rng.sample(candidates, size)

    pool = sample_pool(train_prompts, num_pairs)
    heldout_pool = sample_pool(heldout_prompts, max(1, num_pairs // 4))
    contested = {_pair_id(a, b): _disagree((a, b), all_profiles) for _, a, b in pool + heldout_pool}
    records = []
    for user_id, truth in users:
        profile = truth["profile"]
        strict = [
            x
            for x in rng.sample(pool, len(pool))
            if ground_truth_reward(profile, x[1]) != ground_truth_reward(profile, x[2])
        ]
        if len(strict) < num_answers + num_heldout:
            raise ValueError(f"User {user_id} has only {len(strict)} non-tied pairs; raise num_pairs")
        answers, heldout = strict[:num_answers], strict[num_answers : num_answers + num_heldout]
        answer_split = "test_new_users" if user_id in new_users else "train"
        targets = [(answer_split, "answer", x) for x in answers]
        targets += [("test_new_users" if user_id in new_users else "test", "heldout", x) for x in heldout]
        if user_id not in new_users:
            extra = [
                x for x in heldout_pool if ground_truth_reward(profile, x[1]) != ground_truth_reward(profile, x[2])
            ]
            targets += [("test_new_prompts", "heldout", x) for x in rng.sample(extra, min(num_heldout, len(extra)))]
        answered = [_orient(bank.prompts[p], a, b, profile) for p, a, b in answers]
        for index, (split, role, (prompt_id, a, b)) in enumerate(targets):
            pair = _orient(bank.prompts[prompt_id], a, b, profile)
            others = [j for j in range(len(answered)) if j != index]
            context = [answered[j] for j in rng.sample(others, rng.randint(low, high))]
            records.append(
                make_record(
                    dataset=dataset,
                    split=split,
                    user_id=user_id,
                    context_pairs=context,
                    context_flips=[rng.random() < 0.5 for _ in context],
                    train=pair,
                    eval=pair,
                    ground_truth=truth,
                    contested=contested[_pair_id(a, b)],
                    pair_id=_pair_id(a, b),
                    prompt_id=prompt_id,
                    role=role,
                )
            )
    return records


def label_matrix(records: list[dict]) -> tuple[list[str], list[str], np.ndarray]:
    """The pair x user label matrix of records with ``pair_id``: ``P[i, u]`` = 1 if user ``u`` prefers the pair's
    canonical first response (the lexicographically smaller text), 0 if the other, NaN if unanswered; rows are
    ``pair_ids``, columns ``user_ids`` (both sorted). Uses each record's eval pair."""
    pair_ids = sorted({r["pair_id"] for r in records})
    user_ids = sorted({r["user_id"] for r in records})
    rows, cols = {p: i for i, p in enumerate(pair_ids)}, {u: j for j, u in enumerate(user_ids)}
    matrix = np.full((len(pair_ids), len(user_ids)), math.nan)  # (pairs, U)
    for r in records:
        matrix[rows[r["pair_id"]], cols[r["user_id"]]] = float(r["eval_chosen"] < r["eval_rejected"])
    return pair_ids, user_ids, matrix
