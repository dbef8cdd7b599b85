"""Held-out accuracy of a trained PLUS run: summaries sampled (or greedy) for each test context, scored by the
reward model on the record's held-out pair."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from plus.artifacts import write_json
from plus.coadapt.config import CoadaptConfig
from plus.coadapt.loop import EVAL_FIELDS, RewardScorer, _check_records, score_summaries
from plus.summarizer import generate_summaries


@torch.no_grad()
def evaluate_plus(
    policy: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    reward_model: nn.Module,
    records: Sequence[dict],
    max_summary_tokens: int,
    output_dir: str | Path | None = None,
    modes: Sequence[str] = ("sampled", "greedy"),
    batch_size: int = 8,
    prefill_marker: bool = False,
    seed: int = 0,
    name: str = "eval",
    temperature: float = 1.0,
    summary_prefix: str = "",
) -> dict[str, float]:
    """Pairwise accuracy 1[r(eval_chosen | z) > r(eval_rejected | z)] per split and summary mode (``sampled`` at
    ``temperature``: use the training run's, ``greedy``), keys ``<mode>/<split>``; also the share of bad
    summaries. With ``output_dir``, writes ``summaries-<name>-<mode>.jsonl`` (one line per record) and
    ``accuracy-<name>.json`` there."""
    _check_records(records, EVAL_FIELDS, "eval")
    scorer = RewardScorer(reward_model)
    splits = np.array([record.get("split", "all") for record in records])
    results: dict[str, float] = {}
    for mode in modes:
        if mode not in ("sampled", "greedy"):
            raise ValueError(f"Unknown evaluation mode {mode!r}; use 'sampled' or 'greedy'")
        torch.manual_seed(seed)
        generated = generate_summaries(
            policy,
            tokenizer,
            [r["context"] for r in records],
            max_new_tokens=max_summary_tokens,
            do_sample=mode == "sampled",
            temperature=temperature,
            batch_size=batch_size,
            prefill_marker=prefill_marker,
            summary_prefix=summary_prefix,
        )
        margins = score_summaries(scorer, generated.texts, records, "eval", batch_size)  # (B,)
        correct = (margins > 0).numpy()
        for split in sorted(set(splits)):
            results[f"{mode}/{split}"] = float(correct[splits == split].mean())
        statuses = np.array([s.status for s in generated.summaries])
        results[f"{mode}/bad_summary_fraction"] = float(np.mean(statuses != "ok"))
        if output_dir is not None:
            path = Path(output_dir) / f"summaries-{name}-{mode}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w") as handle:
                for record, summary, margin in zip(records, generated.summaries, margins.tolist(), strict=True):
                    row = {
                        "user_id": record.get("user_id"),
                        "split": record.get("split"),
                        "summary": summary.text,
                        "status": summary.status,
                        "margin": margin,
                        "correct": margin > 0,
                    }
                    handle.write(json.dumps(row) + "\n")
    if output_dir is not None:
        write_json(Path(output_dir) / f"accuracy-{name}.json", results)
    return results


@torch.no_grad()
def summary_accuracy(
    policy: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    reward_model: nn.Module,
    records: Sequence[dict],
    config: CoadaptConfig,
    seed: int = 0,
    batch_size: int = 16,
) -> tuple[dict[str, dict], list[str]]:
    """Per split of ``records``: `plus.evaluation.accuracy_from_credits` of the reward model reading one summary
    sampled per context as the loop samples them (``config``'s temperature, prefix and length; seeded, inside
    `torch.random.fork_rng` so a training run's RNG is left alone), scored on the record's held-out pair. Also
    returns the summaries, in record order."""
    from plus.evaluation import accuracy_from_credits, pair_credit

    _check_records(records, EVAL_FIELDS, "eval")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        generated = generate_summaries(
            policy, tokenizer, [r["context"] for r in records], max_new_tokens=config.max_summary_tokens,
            temperature=config.temperature, top_p=config.top_p, batch_size=batch_size,
            prefill_marker=config.prefill_marker, summary_prefix=config.summary_prefix,
        )  # fmt: skip
    was_training = reward_model.training
    margins = score_summaries(RewardScorer(reward_model), generated.texts, records, "eval", batch_size)  # (N,)
    reward_model.train(was_training)
    credits = pair_credit(margins, torch.zeros_like(margins)).tolist()
    splits = {}
    for split in sorted({r["split"] for r in records}):
        rows = [i for i, r in enumerate(records) if r["split"] == split]
        splits[split] = accuracy_from_credits([credits[i] for i in rows], [records[i] for i in rows])
    return splits, generated.texts
