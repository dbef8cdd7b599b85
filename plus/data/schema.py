"""The record schema shared by every data set, its validation, JSONL input/output and `datasets` conversion.

A record is one plain JSON object: a user's context plus the pairs PLUS trains and evaluates on. The PLUS
field names are kept so files interoperate with the published format:

=====================  ======================================================================================
``context``            the rendered text of the user's context (str, non-empty): what the summarizer reads
``context_messages``   the same context as chat messages, a list of ``{"role", "content"}`` dicts. A labelled
                       context pair is three messages: user = the prompt, assistant = ``Response A: ...`` and
                       ``Response B: ...``, user = ``I prefer Response A.`` (or B; the order is random). An
                       unlabelled past conversation is its own turns; a user guide is one user message.
``reward_prompt``      prompt of the pair that scores the summarizer (``chosen`` > ``rejected``)
``chosen``, ``rejected``
``train_prompt``       prompt of the pair the reward model is updated on (``train_chosen`` > ``train_rejected``)
``train_chosen``, ``train_rejected``
``eval_prompt``        prompt of the held-out pair the metrics score (``eval_chosen`` > ``eval_rejected``)
``eval_chosen``, ``eval_rejected``
=====================  ======================================================================================

and adds:

- ``user_id`` (str), ``split`` (one of `SPLITS`), ``dataset`` (str);
- ``ground_truth``: for synthetic users ``{"profile": {...}, "description": str}`` (the user's true preference
  profile as numbers, and its plain-language description); ``None`` for real users;
- ``contested``: whether the users of the population disagree on the eval pair (bool), ``None`` if undefined;
- ``context_pairs``: the labelled context pairs as data, a list of ``{"prompt", "chosen", "rejected"}`` dicts
  (empty for unlabelled contexts), so VPL/PAL can embed them without parsing text;
- ``context_kind``: ``pairs`` (labelled preference pairs), ``conversations`` (unlabelled) or ``user_guide``;
- ``majority_credit`` (optional, synthetic populations): the credit the *training* users' majority vote earns on
  the eval pair (`majority_credit`). Its mean is the best accuracy a user-blind model can reach on a split (the
  user-blind ceiling; 50% on pairs a population splits evenly, higher where most users agree).

Builders may add more keys (``pair_id``, ``prompt_id``, ...); they must be JSON values and are kept as they are.
Validation never drops a record: a bad one raises `RecordError` naming the record (file and line, or index),
the field and what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from plus.artifacts import numbered_lines, write_text_atomic

SPLITS: tuple[str, ...] = ("train", "test", "test_new_users", "test_new_prompts", "test_ood")
"""``train``; ``test`` = seen users, held-out pairs; ``test_new_users`` = users never seen in train;
``test_new_prompts`` = seen users on prompts never seen in train; ``test_ood`` = out-of-distribution contexts."""

PAIR_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("reward_prompt", "chosen", "rejected"),
    ("train_prompt", "train_chosen", "train_rejected"),
    ("eval_prompt", "eval_chosen", "eval_rejected"),
)
TEXT_FIELDS: tuple[str, ...] = ("context",) + tuple(name for triple in PAIR_FIELDS for name in triple)
REQUIRED_FIELDS: tuple[str, ...] = TEXT_FIELDS + (
    "context_messages",
    "user_id",
    "split",
    "dataset",
    "ground_truth",
    "contested",
)
CONTEXT_KINDS: tuple[str, ...] = ("pairs", "conversations", "user_guide")
ROLES: tuple[str, ...] = ("system", "user", "assistant")


class RecordError(ValueError):
    """A record (or a file of records) that breaks the schema; the message names the record and the field."""


def _fail(where: str, field: str | None, problem: str) -> RecordError:
    return RecordError(f"{where}: field {field!r}: {problem}" if field else f"{where}: {problem}")


def _check_messages(value: Any, where: str, field: str) -> None:
    if not isinstance(value, list):
        raise _fail(where, field, f"must be a list of {{'role', 'content'}} messages, got {type(value).__name__}")
    for i, message in enumerate(value):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise _fail(where, field, f"message {i} must be a dict with exactly 'role' and 'content', got {message!r}")
        if message["role"] not in ROLES:
            raise _fail(where, field, f"message {i} has role {message['role']!r}; expected one of {ROLES}")
        if not isinstance(message["content"], str) or not message["content"].strip():
            raise _fail(where, field, f"message {i} has empty or non-string content")


def validate_record(record: Any, where: str = "record") -> dict:
    """Check ``record`` against the schema and return it unchanged; raise `RecordError` naming ``where``, the
    field and the problem otherwise."""
    if not isinstance(record, dict):
        raise _fail(where, None, f"a record must be a JSON object (dict), got {type(record).__name__}")
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        raise _fail(where, missing[0], f"missing (all missing fields: {missing})")
    for name in TEXT_FIELDS + ("user_id", "dataset"):
        value = record[name]
        if not isinstance(value, str):
            raise _fail(where, name, f"must be a string, got {type(value).__name__} {value!r:.60}")
        if not value.strip():
            raise _fail(where, name, "is empty")
    for _prompt, chosen, rejected in PAIR_FIELDS:
        if record[chosen] == record[rejected]:
            raise _fail(where, chosen, f"is identical to {rejected!r}: a pair needs two different responses")
    if record["split"] not in SPLITS:
        raise _fail(where, "split", f"is {record['split']!r}; expected one of {SPLITS}")
    _check_messages(record["context_messages"], where, "context_messages")
    if not record["context_messages"]:
        raise _fail(where, "context_messages", "is empty")
    truth = record["ground_truth"]
    if truth is not None:
        if not isinstance(truth, dict):
            raise _fail(where, "ground_truth", f"must be a dict or null, got {type(truth).__name__}")
        if not isinstance(truth.get("profile"), dict) or not truth["profile"]:
            raise _fail(where, "ground_truth", "needs a non-empty dict 'profile'")
        if not isinstance(truth.get("description"), str) or not truth["description"].strip():
            raise _fail(where, "ground_truth", "needs a non-empty string 'description'")
    if record["contested"] is not None and not isinstance(record["contested"], bool):
        raise _fail(where, "contested", f"must be true, false or null, got {record['contested']!r}")
    if "context_kind" in record and record["context_kind"] not in CONTEXT_KINDS:
        raise _fail(where, "context_kind", f"is {record['context_kind']!r}; expected one of {CONTEXT_KINDS}")
    if "context_pairs" in record:
        pairs = record["context_pairs"]
        if not isinstance(pairs, list):
            raise _fail(where, "context_pairs", f"must be a list, got {type(pairs).__name__}")
        for i, pair in enumerate(pairs):
            if not isinstance(pair, dict) or set(pair) != {"prompt", "chosen", "rejected"}:
                raise _fail(where, "context_pairs", f"pair {i} must have exactly 'prompt', 'chosen', 'rejected'")
            if not all(isinstance(v, str) and v.strip() for v in pair.values()):
                raise _fail(where, "context_pairs", f"pair {i} has an empty or non-string value")
    try:
        json.dumps(record, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise _fail(where, None, f"is not plain JSON ({error})") from None
    return record


def validate_records(records: Iterable[Any], name: str = "record") -> list[dict]:
    """Validate every record (errors say ``<name> <index>``) and return them as a list."""
    return [validate_record(record, where=f"{name} {i}") for i, record in enumerate(records)]


def read_jsonl(path: str | Path) -> list[dict]:
    """Read and validate a JSONL file of records; an error names ``path:line`` and the field."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No record file at {path}")
    records = []
    for where, line in numbered_lines(path):
        if not line.strip():
            raise RecordError(f"{where}: empty line (one JSON record per line, no blank lines)")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise RecordError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
        records.append(validate_record(record, where=where))
    return records


def write_jsonl(records: Sequence[dict], path: str | Path) -> Path:
    """Validate all records, then write them one per line atomically (a bad record or a crash never leaves a
    half-written file)."""
    records = validate_records(records)
    lines = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n" for record in records)
    return write_text_atomic(path, "".join(lines))


def to_dataset(records: Sequence[dict]):
    """Validated records as a `datasets.Dataset` (one row per record, same keys).

    ``ground_truth`` is stored as a JSON string column (profiles of different data sets have different keys,
    which Arrow cannot put in one struct column); `json.loads` it back.
    """
    import datasets

    rows = []
    for record in validate_records(records):
        row = dict(record)
        row["ground_truth"] = None if record["ground_truth"] is None else json.dumps(record["ground_truth"])
        rows.append(row)
    return datasets.Dataset.from_list(rows)


# --- helpers builders share -------------------------------------------------------------------------------


def render_context(pairs: Sequence[dict]) -> str:
    """The context text of labelled pairs: one block per pair with the prompt, the preferred and the rejected
    response."""
    blocks = []
    for i, pair in enumerate(pairs, start=1):
        blocks.append(
            f"Example {i}\nPrompt: {pair['prompt']}\nPreferred response: {pair['chosen']}\n"
            f"Rejected response: {pair['rejected']}"
        )
    return "\n\n".join(blocks)


def pairs_to_messages(pairs: Sequence[dict], flips: Sequence[bool]) -> list[dict]:
    """Chat messages of labelled pairs (see the module docstring); ``flips[i]`` puts the chosen response second."""
    messages = []
    for pair, flip in zip(pairs, flips, strict=True):
        first, second = (pair["rejected"], pair["chosen"]) if flip else (pair["chosen"], pair["rejected"])
        messages.append({"role": "user", "content": pair["prompt"]})
        messages.append({"role": "assistant", "content": f"Response A: {first}\n\nResponse B: {second}"})
        messages.append({"role": "user", "content": f"I prefer Response {'B' if flip else 'A'}."})
    return messages


def majority_credit(utilities: Iterable[tuple[float, float]]) -> float:
    """The credit of a population's majority vote on one pair, from each user's (utility of ``chosen``, utility of
    ``rejected``): 1.0 when more users prefer ``chosen``, 0.5 when as many prefer each (or none has a preference),
    0.0 otherwise. Users indifferent between the two do not vote."""
    votes = sum((a > b) - (a < b) for a, b in utilities)
    return 1.0 if votes > 0 else 0.0 if votes < 0 else 0.5


def make_record(
    *,
    dataset: str,
    split: str,
    user_id: str,
    context_pairs: Sequence[dict],
    context_flips: Sequence[bool],
    train: dict,
    eval: dict,
    ground_truth: dict | None,
    contested: bool | None,
    **extra: Any,
) -> dict:
    """A record whose context is labelled pairs; ``train`` (also the summarizer's reward pair) and ``eval`` are
    ``{"prompt", "chosen", "rejected"}`` dicts. ``extra`` keys are added as they are."""
    record = {
        "dataset": dataset,
        "split": split,
        "user_id": user_id,
        "context": render_context(context_pairs),
        "context_messages": pairs_to_messages(context_pairs, context_flips),
        "context_pairs": [dict(prompt=p["prompt"], chosen=p["chosen"], rejected=p["rejected"]) for p in context_pairs],
        "context_kind": "pairs",
        "reward_prompt": train["prompt"],
        "chosen": train["chosen"],
        "rejected": train["rejected"],
        "train_prompt": train["prompt"],
        "train_chosen": train["chosen"],
        "train_rejected": train["rejected"],
        "eval_prompt": eval["prompt"],
        "eval_chosen": eval["chosen"],
        "eval_rejected": eval["rejected"],
        "ground_truth": ground_truth,
        "contested": contested,
    }
    record.update(extra)
    return record
