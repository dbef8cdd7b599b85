"""PRISM (real users) from ``HannahRoseKirk/prism-alignment``, ``conversations`` config, as PLUS uses it.

Each conversation has a ``user_id``, a ``conversation_id`` and a ``conversation_history``: a list of turns'
messages ``{"turn", "role" ("user" or "model"), "content", "score", "if_chosen", ...}``; in every turn the user
rated several model responses (1-100) and chose one to continue with. A score may be a number or a numeric string
("85"); a score that is not a number, or not in 1-100, is refused, as are rows without a ``user_id`` or
``conversation_id`` and messages whose ``content`` is not text (a `RecordError` names the row and the field).

- Pairs of a conversation: in each turn, the user's message is the prompt, the chosen response (``if_chosen``) is
  ``chosen`` and every response of the same turn with a strictly lower score is a ``rejected`` (ties dropped).
  The prompt is the turn's user message alone (earlier turns are not prepended).
- Context: ``num_context_conversations`` (3) *other* conversations of the same user, each contributing the pair
  of its opening turn with the largest score gap (chosen vs its lowest-rated alternative), rendered as labelled
  pairs.
- Users with fewer than ``num_context_conversations + 2`` conversations that yield pairs are dropped (a seen user
  needs a held-out conversation and a train conversation with three other train conversations as context).
- Splits (``random.Random(seed)``): a share ``new_user_fraction`` of users is held out (``test_new_users``: every
  one of their conversations is a target in turn). For seen users one conversation is held out (``test``), the
  rest are targets in ``train``; contexts are drawn from the user's train conversations only.

Records: one per target pair (reward, train and eval pair alike); ``ground_truth`` None; ``contested`` None
(there is no population-level label); ``pair_id`` = ``<conversation_id>:<turn>:<rejected index>``.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from pathlib import Path

from plus.data.schema import RecordError, make_record
from plus.data.ultrafeedback import load_table

logger = logging.getLogger(__name__)

PRISM_HUB = "HannahRoseKirk/prism-alignment"
SCORE_RANGE: tuple[float, float] = (1.0, 100.0)
"""PRISM's rating scale: users score each model response from 1 to 100."""


def message_score(message: dict, where: str) -> float | None:
    """A model message's ``score`` as a float, or None when it is unrated (null). Numeric strings ("85") are
    converted, so scores never compare as text; anything else, NaN included, or a score outside `SCORE_RANGE`
    raises `RecordError` naming ``where`` and the field."""
    value = message.get("score")
    if value is None:
        return None
    low, high = SCORE_RANGE
    problem = f"is {value!r}; expected a number from {low:g} to {high:g} (or null when unrated)"
    if isinstance(value, bool):
        raise RecordError(f"{where}: field 'score' {problem}")
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise RecordError(f"{where}: field 'score' {problem}") from None
    if not low <= score <= high:  # False for NaN too
        raise RecordError(f"{where}: field 'score' {problem}")
    return score


def message_chosen(message: dict, where: str) -> bool:
    """A model message's ``if_chosen`` as a bool: true/false, 1/0, or the strings "true"/"false"/"1"/"0" (any
    case), missing or null = False; anything else raises `RecordError` naming ``where`` and the field (a string
    "false" must not count as chosen)."""
    value = message.get("if_chosen")
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise RecordError(f"{where}: field 'if_chosen' is {value!r}; expected true or false")


def conversation_pairs(history: list[dict], where: str) -> list[tuple[int, int, dict, float]]:
    """``(turn, rejected index, {"prompt", "chosen", "rejected"}, score gap)`` for every strictly-ordered pair of a
    conversation history; an error names ``where`` and the broken field."""
    if not isinstance(history, list):
        raise RecordError(f"{where}: field 'conversation_history' is {history!r:.80}; expected a list of messages")
    turns: dict[int, dict] = defaultdict(lambda: {"prompt": None, "models": []})
    for m, message in enumerate(history):
        try:
            turn, role, content = int(message["turn"]), message["role"], message["content"]
        except (KeyError, TypeError, ValueError):
            raise RecordError(f"{where}: conversation_history[{m}] needs 'turn', 'role' and 'content'") from None
        if not isinstance(content, str):
            raise RecordError(f"{where}: conversation_history[{m}]: field 'content' is {content!r:.80}; expected text")
        if role == "user":
            turns[turn]["prompt"] = content
        elif role == "model":
            turns[turn]["models"].append(
                {
                    **message,
                    "score": message_score(message, f"{where}: conversation_history[{m}]"),
                    "if_chosen": message_chosen(message, f"{where}: conversation_history[{m}]"),
                }
            )
        else:
            raise RecordError(f"{where}: conversation_history[{m}]: field 'role' is {role!r}; expected user or model")
    out = []
    for turn in sorted(turns):
        prompt, models = turns[turn]["prompt"], turns[turn]["models"]
        chosen = [m for m in models if m.get("if_chosen")]
        if not prompt or len(chosen) != 1 or chosen[0].get("score") is None:
            continue
        best = chosen[0]
        for k, other in enumerate(models):
            if other is best or other.get("score") is None or other["score"] >= best["score"]:
                continue
            if other["content"].strip() and other["content"] != best["content"]:
                pair = {"prompt": prompt, "chosen": best["content"], "rejected": other["content"]}
                out.append((turn, k, pair, float(best["score"]) - float(other["score"])))
    return out


def build_prism(
    source: str | Path = PRISM_HUB,
    seed: int = 0,
    new_user_fraction: float = 0.1,
    num_context_conversations: int = 3,
    max_pairs_per_conversation: int | None = None,
) -> list[dict]:
    """PRISM records (``dataset`` = ``prism``): splits ``train``, ``test`` and ``test_new_users``; see the module
    docstring. ``source`` is the hub id (``conversations`` config) or a local copy of that config."""
    if not 0.0 <= new_user_fraction < 1.0:
        raise ValueError(f"new_user_fraction must be in [0, 1), got {new_user_fraction}")
    is_file = Path(source).is_file()
    table = load_table(source, None if is_file else "conversations")
    by_user: dict[str, list[tuple[str, list]]] = defaultdict(list)
    for i, row in enumerate(table):
        where = f"{source} row {i}"
        for field in ("user_id", "conversation_id", "conversation_history"):
            if field not in row:
                raise RecordError(f"{where}: field {field!r} missing (PRISM conversations schema)")
        for field in ("user_id", "conversation_id"):  # a file where some rows lack the field loads it as None
            if row[field] is None or str(row[field]).strip() == "":
                raise RecordError(f"{where}: field {field!r} is {row[field]!r}; every conversation needs one")
        pairs = conversation_pairs(row["conversation_history"], where)
        if pairs:
            by_user[str(row["user_id"])].append((str(row["conversation_id"]), pairs))
    rng = random.Random(f"prism-{seed}")
    users = sorted(u for u, convs in by_user.items() if len(convs) >= num_context_conversations + 2)
    logger.info("PRISM: %d users with enough conversations of %d", len(users), len(by_user))
    if not users:
        raise RecordError(
            f"{source}: no user has the {num_context_conversations + 2} rated conversations a record needs "
            f"({num_context_conversations} for the context, one to train and one to test; {len(by_user)} users "
            "have fewer); lower num_context_conversations or give more conversations"
        )
    rng.shuffle(users)
    num_new = round(new_user_fraction * len(users))
    new_users = set(users[:num_new])

    def context_pair(pairs: list) -> dict:
        opening = min(turn for turn, *_ in pairs)
        return max((x for x in pairs if x[0] == opening), key=lambda x: x[3])[2]

    records = []
    for user in sorted(users):
        convs = sorted(by_user[user])
        if user in new_users:
            targets = [("test_new_users", c) for c in range(len(convs))]
            context_pool = list(range(len(convs)))
        else:
            held = rng.randrange(len(convs))
            targets = [("test" if c == held else "train", c) for c in range(len(convs))]
            context_pool = [c for c in range(len(convs)) if c != held]
        for split, c in targets:
            others = [k for k in context_pool if k != c]
            if len(others) < num_context_conversations:
                continue
            chosen_convs = rng.sample(others, num_context_conversations)
            context = [context_pair(convs[k][1]) for k in chosen_convs]
            conversation_id, pairs = convs[c]
            if max_pairs_per_conversation is not None:
                pairs = pairs[:max_pairs_per_conversation]
            for turn, k, pair, _ in pairs:
                records.append(
                    make_record(
                        dataset="prism",
                        split=split,
                        user_id=user,
                        context_pairs=context,
                        context_flips=[rng.random() < 0.5 for _ in context],
                        train=pair,
                        eval=pair,
                        ground_truth=None,
                        contested=None,
                        pair_id=f"{conversation_id}:{turn}:{k}",
                        context_conversation_ids=[convs[k][0] for k in chosen_convs],
                    )
                )
    return records
