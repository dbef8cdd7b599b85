"""Descriptive statistics of record lists for the data-set chapter: sizes, users, contested share, context
lengths, and a readable rendering of one record."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import mean, median

from transformers import PreTrainedTokenizerBase

from plus.data.schema import SPLITS


def context_token_lengths(records: Sequence[dict], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Tokens in each record's ``context`` text (no special tokens)."""
    encoded = tokenizer([r["context"] for r in records], add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in encoded]


def summarize_splits(records: Sequence[dict], tokenizer: PreTrainedTokenizerBase) -> list[dict]:
    """One row per (data set, split): records, users, contested share of eval pairs (None if undefined),
    context pairs per record and context tokens (mean, median, max)."""
    rows = []
    keys = sorted({(r["dataset"], r["split"]) for r in records}, key=lambda k: (k[0], SPLITS.index(k[1])))
    for dataset, split in keys:
        part = [r for r in records if r["dataset"] == dataset and r["split"] == split]
        lengths = context_token_lengths(part, tokenizer)
        flags = [r["contested"] for r in part if r["contested"] is not None]
        rows.append(
            {
                "dataset": dataset,
                "split": split,
                "records": len(part),
                "users": len({r["user_id"] for r in part}),
                "contested_share": sum(flags) / len(flags) if flags else None,
                "context_pairs_mean": mean(len(r.get("context_pairs", [])) for r in part),
                "context_tokens_mean": mean(lengths),
                "context_tokens_median": median(lengths),
                "context_tokens_max": max(lengths),
            }
        )
    return rows


def compact_summary(rows: Sequence[dict]) -> list[dict]:
    """`summarize_splits` rows as one line per data set, for a table that fits a page: train records and users,
    each held-out split's records, the share of contested pairs over the held-out splits (None where undefined)
    and the train contexts' median and largest length in tokens."""
    by_dataset: dict[str, list[dict]] = {}
    for row in rows:
        by_dataset.setdefault(row["dataset"], []).append(row)
    lines = []
    for dataset, splits in by_dataset.items():
        train = next((row for row in splits if row["split"] == "train"), None)
        held_out = [row for row in splits if row["split"] != "train"]
        shares = [(row["contested_share"], row["records"]) for row in held_out if row["contested_share"] is not None]
        counted = sum(n for _, n in shares)
        lines.append(
            {
                "data set": dataset,
                "train records": train["records"] if train else 0,
                "users": max(row["users"] for row in splits),
                "held-out records": ", ".join(f"{row['split']} {row['records']}" for row in held_out),
                "contested": sum(share * n for share, n in shares) / counted if counted else None,
                "context tokens (median, max)": f"{train['context_tokens_median']:g}, {train['context_tokens_max']}"
                if train
                else "",
            }
        )
    return lines


def record_cards(records: dict[str, Sequence[dict]], max_chars: int = 600) -> list[str]:
    """`format_record` of the first record of each data set's first and last split, in the order of ``records``
    ({data set: records})."""
    cards = []
    for recs in records.values():
        splits = list(dict.fromkeys(r["split"] for r in recs))
        for split in dict.fromkeys([splits[0], splits[-1]]):
            cards.append(format_record(next(r for r in recs if r["split"] == split), max_chars=max_chars))
    return cards


def format_record(record: dict, max_chars: int = 600) -> str:
    """A record as Markdown: user, split, ground truth, the context text and the eval pair."""

    def cut(text: str) -> str:
        return text if len(text) <= max_chars else text[:max_chars] + " [...]"

    truth = record["ground_truth"]
    lines = [
        f"**{record['dataset']}** / `{record['split']}` / user `{record['user_id']}`"
        + (f" / contested: {record['contested']}" if record["contested"] is not None else ""),
        "",
        f"*Ground truth:* {truth['description']}" if truth else "*Ground truth:* none (real user)",
        "",
        "*Context* (" + record.get("context_kind", "pairs") + "):",
        "",
        "```text\n" + cut(record["context"]) + "\n```",
        "",
        f"*Eval prompt:* {record['eval_prompt']}",
        "",
        f"- chosen: {cut(record['eval_chosen'])}",
        f"- rejected: {cut(record['eval_rejected'])}",
    ]
    return "\n".join(lines)
