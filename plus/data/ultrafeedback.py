"""UF-P-2 and UF-P-4 from the two UltraFeedback hub sets, as the PLUS reference describes.

1. Pairs: ``argilla/ultrafeedback-binarized-preferences-cleaned`` (``prompt``, ``chosen`` and ``rejected`` as
   chat-message lists whose last assistant turn is the response).
2. Ratings: ``openbmb/UltraFeedback`` (``instruction`` and ``completions``, each completion with ``response`` and
   ``annotations[dimension]["Rating"]``, a string "1"-"5" or "N/A"), joined on (prompt, response text) after
   stripping whitespace. A pair whose prompt or either response has no rating row is dropped; a pair that repeats
   an earlier one (same prompt and the same two responses, in either order) is dropped, so a copy of a test pair
   can never be a train pair.
3. A user = one rating dimension (``helpfulness``, ``honesty``, ``instruction_following``, ``truthfulness``).
   A pair with "N/A" for any of the population's dimensions is dropped; otherwise each user prefers the response
   with the higher rating, ties broken by a fair coin (``random.Random(seed)``, in pair order).
4. Only pairs on which the users disagree are kept (so every record is ``contested``).
5. 10% of the kept pairs go to ``test`` (a permutation from ``random.Random(seed)``, seed 42 by default).

Records: one per (user, pair): the pair is the record's reward, train and eval pair; the context is 2-4 other
pairs of the same user from the *train* split (its history; never the target itself), rendered with
`plus.data.schema.render_context`. ``ground_truth`` is
None (real annotations); ``pair_id`` is the pair's index in the argilla set.

Sources are hub ids or local copies: a folder `datasets.load_dataset` understands, or one ``.json``/``.jsonl``/
``.parquet``/``.csv`` file. A source without rows, a null or missing field, or a rating that is neither "N/A" nor
a number in 1-5 raises `RecordError` naming the file, the row and the field.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

from plus.data.schema import RecordError, make_record

logger = logging.getLogger(__name__)

UF_DIMENSIONS: tuple[str, ...] = ("helpfulness", "honesty", "instruction_following", "truthfulness")
UF_PREFERENCES_HUB = "argilla/ultrafeedback-binarized-preferences-cleaned"
UF_RATINGS_HUB = "openbmb/UltraFeedback"
UF_POPULATION_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "uf-p-2": ("helpfulness", "honesty"),
    "uf-p-4": UF_DIMENSIONS,
}
UF_RATING_RANGE: tuple[float, float] = (1.0, 5.0)
"""openbmb/UltraFeedback's per-dimension rating scale ("1"-"5"; "N/A" where a rating does not apply)."""


def _is_blank(path: Path) -> bool:
    """True for a file that holds nothing but whitespace (read until its first other byte)."""
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 16), b""):
            if chunk.strip():
                return False
    return True


def load_table(source: str | Path, config_name: str | None = None, split: str = "train"):
    """A `datasets.Dataset` from a hub id, a local folder, or one data file (.json/.jsonl/.parquet/.csv).

    A source without rows raises `RecordError` naming it (`datasets` itself fails on an empty file with a bare
    StopIteration)."""
    import datasets

    path = Path(source)
    suffixes = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
    if path.is_file():
        if path.suffix not in suffixes:
            raise ValueError(f"{path}: unsupported data file type {path.suffix!r}; use one of {sorted(suffixes)}")
        if _is_blank(path):
            raise RecordError(f"{path}: the file is empty (no rows)")
        try:
            table = datasets.load_dataset(suffixes[path.suffix], data_files=str(path), split=split)
        except ValueError as error:  # e.g. a CSV of a header only: "Instruction 'train' corresponds to no data!"
            raise RecordError(f"{path}: no rows could be read ({error})") from error
    else:
        table = datasets.load_dataset(str(source), config_name, split=split)
    if len(table) == 0:
        raise RecordError(f"{source}: no rows (split {split!r})")
    return table


def _text(value, where: str, field: str) -> str:
    """``value`` when it is a string; otherwise (null, a missing field, a number) a `RecordError`."""
    if not isinstance(value, str):
        raise RecordError(f"{where}: field {field!r} is {value!r:.80}; expected text")
    return value


def _response(messages, where: str, field: str) -> str:
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        raise RecordError(f"{where}: field {field!r}: expected a list of chat messages, got {messages!r:.80}")
    return _text(messages[-1].get("content"), where, f"{field}[-1].content")


def _rating(completion: dict, dimension: str, where: str) -> float | None:
    try:
        value = completion["annotations"][dimension]["Rating"]
    except (KeyError, TypeError):
        raise RecordError(f"{where}: field 'annotations.{dimension}.Rating' missing") from None
    if value in ("N/A", None, ""):
        return None
    low, high = UF_RATING_RANGE
    problem = f"field 'annotations.{dimension}.Rating': not a number from {low:g} to {high:g} or N/A: {value!r}"
    try:
        rating = float(value)
    except (TypeError, ValueError):
        rating = math.nan
    if isinstance(value, bool) or not low <= rating <= high:  # the comparison is False for NaN too
        raise RecordError(f"{where}: {problem}")
    return rating


def _oriented(pair: dict, user: str) -> dict:
    a, b = (pair["a"], pair["b"]) if pair["labels"][user] else (pair["b"], pair["a"])
    return {"prompt": pair["prompt"], "chosen": a, "rejected": b}


def build_ultrafeedback(
    dimensions: tuple[str, ...] | str = "uf-p-2",
    preferences_source: str | Path = UF_PREFERENCES_HUB,
    ratings_source: str | Path = UF_RATINGS_HUB,
    seed: int = 42,
    test_fraction: float = 0.1,
    context_sizes: tuple[int, int] = (2, 4),
    max_pairs: int | None = None,
) -> list[dict]:
    """UF-P records (``dimensions`` = ``"uf-p-2"``, ``"uf-p-4"`` or a tuple of `UF_DIMENSIONS`); see the module
    docstring. ``max_pairs`` keeps the first that many disagreeing pairs (before the test split)."""
    name = dimensions if isinstance(dimensions, str) else "uf-p-custom"
    if isinstance(dimensions, str):
        if dimensions not in UF_POPULATION_DIMENSIONS:
            raise ValueError(f"Unknown population {dimensions!r}; choose {sorted(UF_POPULATION_DIMENSIONS)}")
        dimensions = UF_POPULATION_DIMENSIONS[dimensions]
    unknown = [d for d in dimensions if d not in UF_DIMENSIONS]
    if unknown or len(dimensions) < 2:
        raise ValueError(f"Need at least two dimensions from {UF_DIMENSIONS}, got {dimensions}")
    low, high = context_sizes
    ratings: dict[tuple[str, str], tuple[dict, str]] = {}  # (instruction, response) -> (ratings, where)
    for i, row in enumerate(load_table(ratings_source)):
        where = f"{ratings_source} row {i}"
        if "instruction" not in row or "completions" not in row:
            raise RecordError(f"{where}: needs fields 'instruction' and 'completions' (openbmb/UltraFeedback schema)")
        instruction, completions = _text(row["instruction"], where, "instruction").strip(), row["completions"]
        if not isinstance(completions, list):
            raise RecordError(f"{where}: field 'completions' is {completions!r:.80}; expected a list of completions")
        for j, completion in enumerate(completions):
            if not isinstance(completion, dict):
                raise RecordError(f"{where} completion {j}: expected a dict with 'response' and 'annotations'")
            response = _text(completion.get("response"), f"{where} completion {j}", "response").strip()
            rated = {d: _rating(completion, d, f"{where} completion {j}") for d in dimensions}
            earlier = ratings.get((instruction, response))
            if earlier is not None and earlier[0] != rated:  # the same response rated twice, differently
                raise RecordError(
                    f"{where} completion {j}: its response to this instruction was already rated at {earlier[1]}, "
                    f"with other ratings ({earlier[0]} vs {rated}); keep one of the two rows"
                )
            ratings[(instruction, response)] = (rated, f"row {i} completion {j}")
    coin = random.Random(seed)
    pairs, unmatched, missing, agreed, duplicates = [], 0, 0, 0, 0
    seen: set[tuple[str, str, str]] = set()
    for i, row in enumerate(load_table(preferences_source)):
        where = f"{preferences_source} row {i}"
        for field in ("prompt", "chosen", "rejected"):
            if field not in row:
                raise RecordError(f"{where}: field {field!r} missing (argilla UltraFeedback schema)")
        prompt = _text(row["prompt"], where, "prompt").strip()
        a, b = _response(row["chosen"], where, "chosen").strip(), _response(row["rejected"], where, "rejected").strip()
        if not (prompt and a and b) or a == b:
            unmatched += 1
            continue
        key = (prompt, *sorted((a, b)))
        if key in seen:  # a copy could land in test while the original trains
            duplicates += 1
            continue
        seen.add(key)
        ra, rb = ratings.get((prompt, a)), ratings.get((prompt, b))
        if ra is None or rb is None:
            unmatched += 1
            continue
        ra, rb = ra[0], rb[0]
        if any(ra[d] is None or rb[d] is None for d in dimensions):
            missing += 1
            continue
        labels = {d: ra[d] > rb[d] if ra[d] != rb[d] else coin.random() < 0.5 for d in dimensions}  # True: a wins
        if len(set(labels.values())) == 1:
            agreed += 1
            continue
        pairs.append({"pair_id": str(i), "prompt": prompt, "a": a, "b": b, "labels": labels})
        if max_pairs is not None and len(pairs) >= max_pairs:
            break
    logger.info(
        "UltraFeedback %s: %d disagreeing pairs kept; %d unmatched, %d duplicates, %d with N/A, %d agreed dropped",
        name,
        len(pairs),
        unmatched,
        duplicates,
        missing,
        agreed,
    )
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    num_test = round(test_fraction * len(pairs))
    test_ids = set(order[:num_test])
    rng = random.Random(f"uf-context-{seed}")
    part = {"train": [p for k, p in enumerate(pairs) if k not in test_ids]}
    part["test"] = [p for k, p in enumerate(pairs) if k in test_ids]
    if len(part["train"]) < high + 1:
        raise ValueError(f"Only {len(part['train'])} train pairs; contexts of up to {high} pairs need {high + 1}")
    records = []
    for split in ("train", "test"):
        for user in dimensions:
            history = [_oriented(p, user) for p in part["train"]]
            for k, pair in enumerate(part[split]):
                others = [j for j in range(len(history)) if split == "test" or j != k]
                context = [history[j] for j in rng.sample(others, rng.randint(low, high))]
                records.append(
                    make_record(
                        dataset=name,
                        split=split,
                        user_id=user,
                        context_pairs=context,
                        context_flips=[rng.random() < 0.5 for _ in context],
                        train=_oriented(pair, user),
                        eval=_oriented(pair, user),
                        ground_truth=None,
                        contested=True,
                        pair_id=pair["pair_id"],
                    )
                )
    return records
