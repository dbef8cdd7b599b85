"""Readable, editable summaries on Pets: does a summary state the user's preference, and does a reward model's
ranking follow when the user edits that fact? (The PLUS paper: the summaries are interpretable, and a user can
read and edit theirs.)

- `faithfulness`: which animals of the user's contested pair (`plus.data.pets.contested_animals`) a held-out
  summary names (`plus.judge.pets_animals`: words, plurals, synonyms, breeds): only the user's own (``own``: it
  states the true preference), only the other (``other``: it states the wrong one), ``both`` or ``neither``.
  `faithfulness_cells` gives each share with a 95% bootstrap interval over contexts, per summarizer and split.
- `style_faithfulness`: the same classes for a style-population user (UF-P-like): which of the user's attribute
  poles a summary names, by word (`plus.judge.style_poles`); the flexible-context page reads PLUS-untrained's
  summaries of each kind of context with it (`plus.flexible_contexts.summary_faithfulness`).
- `run_editing`: a reward model that reads summaries scores the contested held-out pairs under each summary as
  written and as edited (`EDITS`): ``swap`` replaces the key fact (dogs <-> cats, `plus.judge.swap_pets_animal`),
  ``reword`` rewrites the words around it and keeps the fact (the control). A summary is edited only when it
  names exactly one animal of the pair, so the edit has one meaning. ``follows``: the share of edited pairs whose
  ranking flips, with a 95% interval over reward-model seeds and pairs.
- `gallery`: the summaries of a few users beside their ground truth.

`plus.judge.score_under_summary` scores one pair under a summary written as text: a reader's own edit in one line.

Departures from the paper's experiment (GPT-4o-judged interpretability of PLUS summaries of real users):

- the reward model that is edited is trained on ideal summaries ("... about dogs.", `plus.control.ideal_reward_model`,
  one per seed), not PLUS's co-trained one: notebook 04's runs keep only the summarizer's adapter in git (the reward
  model's weights are not kept), so the edit measures what a summary-reading reward model does with an edited fact;
- faithfulness is read by word from the animal a summary names, on synthetic Pets users whose preference is known,
  not judged by people or an LLM; the summaries come from notebook 04's runs of one training seed (the interval is
  over contexts only).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from plus.artifacts import as_read_back, read_json, write_json
from plus.data.attributes import opposite_pole
from plus.data.pets import contested_animals, ideal_summary, record_profile
from plus.evaluation import bootstrap_interval, format_interval
from plus.judge import edit_margins, pets_animals, style_poles, swap_pets_animal, swap_style_poles

CLASSES = ("own", "other", "both", "neither")
"""Which animals of the user's contested pair a summary names (`faithfulness`)."""
LOOP_SUMMARIZERS = ("plus-untrained", "plus-static-rm", "plus")
"""Notebook 04's summarizers whose held-out summaries are read (those found)."""
SOURCES = ("ideal-summary", *LOOP_SUMMARIZERS)
"""Whose summaries are measured and edited: the ideal one-fact summary (the reference), then notebook 04's."""
LABELS = {
    "ideal-summary": "Ideal one-fact",
    "plus-untrained": "PLUS-untrained",
    "plus-static-rm": "PLUS, frozen reward model",
    "plus": "PLUS",
}
"""How tables and the note name each source ("<label> summaries")."""
COMPARED = (("plus", "plus-untrained"),)
"""Pairs of summarizers whose ``own`` shares are compared per context (the first minus the second)."""
_REWORDS = {r"\bprefers\b": "likes", r"\bresponses\b": "answers", r"\bprefer\b": "like"}


def faithfulness(summary: str, record: dict) -> str:
    """`CLASSES`: which animals of the record's user's contested pair ``summary`` names (an empty summary, which
    a summarizer may write, names ``neither``)."""
    if not isinstance(summary, str):
        raise TypeError(f"the summary of record {record.get('user_id')!r} must be text, got {type(summary).__name__}")
    own, other = contested_animals(record_profile(record))
    named = pets_animals(summary)
    return {(True, False): "own", (False, True): "other", (True, True): "both"}.get(
        (own in named, other in named), "neither"
    )


def style_faithfulness(summary: str, record: dict) -> str:
    """`CLASSES` for a style-population user (``ground_truth["poles"]``, `plus.data.attributes`): whether
    ``summary`` names (`plus.judge.style_poles`) one of the user's own poles (``own``), one of their opposites
    (``other``), both, or neither."""
    if not isinstance(summary, str):
        raise TypeError(f"the summary of record {record.get('user_id')!r} must be text, got {type(summary).__name__}")
    poles = record.get("ground_truth", {}).get("poles")
    if not poles:
        raise ValueError(f"record {record.get('user_id')!r} has no ground_truth.poles: not a style-population user")
    named = style_poles(summary)
    own = any(pole in named for pole in poles)
    other = any(opposite_pole(pole) in named for pole in poles)
    return {(True, False): "own", (False, True): "other", (True, True): "both"}.get((own, other), "neither")


def names_one(summary: str, record: dict) -> bool:
    """Whether ``summary`` names exactly one animal of the user's contested pair: the summaries that are edited."""
    return faithfulness(summary, record) in ("own", "other")


def swap(summary: str, record: dict) -> str | None:
    """The key-fact edit: the user's two contested animals swapped, for a summary that names exactly one."""
    return swap_pets_animal(summary, record_profile(record)) if names_one(summary, record) else None


def reword(summary: str, record: dict) -> str | None:
    """The control edit: "prefers" -> "likes", "responses" -> "answers" (the fact kept), for the same summaries
    as `swap`; None when no word changes."""
    return _reworded(summary) if names_one(summary, record) else None


def _reworded(summary: str) -> str | None:
    out = summary
    for pattern, word in _REWORDS.items():
        out = re.sub(pattern, word, out)
    return None if out == summary else out


EDITS: dict[str, Callable[[str, dict], str | None]] = {"swap": swap, "reword": reword}
"""The edits of `run_editing` on Pets: the key fact (``swap``) and its control (``reword``)."""


def names_one_pole(summary: str, record: dict) -> bool:
    """Whether ``summary`` names the style user's own poles or their opposites, not both (`style_faithfulness`):
    the style summaries that are edited."""
    return style_faithfulness(summary, record) in ("own", "other")


def swap_style(summary: str, record: dict) -> str | None:
    """The style edit of the key fact: the user's poles and their opposites swapped (`plus.judge.swap_style_poles`:
    "long, detailed answers" -> "short, to-the-point answers"), for a summary that names one side."""
    return swap_style_poles(summary, record["ground_truth"]["poles"]) if names_one_pole(summary, record) else None


def reword_style(summary: str, record: dict) -> str | None:
    """The style control edit: `reword`'s word changes (the fact kept), for the same summaries as `swap_style`."""
    return _reworded(summary) if names_one_pole(summary, record) else None


STYLE_EDITS: dict[str, Callable[[str, dict], str | None]] = {"swap": swap_style, "reword": reword_style}
"""The edits of `run_editing` on a style population (``edits=STYLE_EDITS``)."""


@dataclass(frozen=True)
class ReadableConfig:
    """One profile's readable-summaries run."""

    dataset: str = "pets-ood"
    splits: tuple[str, ...] = ("test", "test_ood")
    """Held-out splits (``test``: the training animals dog/cat; ``test_ood``: rabbit/bird, never in training)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of the summary-reading reward model (the summaries are fixed: notebook 04's training seed 0)."""
    epochs: int = 8
    batch_size: int = 16
    gallery_size: int = 6
    """Users per split in the gallery."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "gallery_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ReadableConfig.{name} must be a positive integer, got {value!r}")
        if not self.seeds or not self.splits:
            raise ValueError("ReadableConfig needs at least one seed and one split")


def readable_config(profile_name: str, **changes) -> ReadableConfig:
    """The profile's run; smoke: one seed, one epoch, two gallery users."""
    from plus.config import get_profile

    config = ReadableConfig()
    if get_profile(profile_name).name == "smoke":
        config = replace(config, seeds=(0,), epochs=1, gallery_size=2)
    return replace(config, **changes)


def source_summaries(records: Sequence[dict], loop: dict[str, Sequence[str]]) -> dict[str, list[str]]:
    """Per source of `SOURCES` (those of `LOOP_SUMMARIZERS` only when ``loop`` has them), each held-out record's
    summary; a missing one (not text) is an error naming the summarizer and the record. An empty one is kept: a
    summarizer may write one (it states nothing, and `faithfulness_cells` counts it)."""
    out = {"ideal-summary": [ideal_summary(record_profile(r)) for r in records]}
    for name in LOOP_SUMMARIZERS:
        if name not in loop:
            continue
        texts = list(loop[name])
        if len(texts) != len(records):
            raise ValueError(f"{name}: {len(texts)} summaries for {len(records)} held-out records")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"{name}: record {index} ({records[index].get('user_id')!r}) has no summary")
        out[name] = texts
    return out


def share(indicator: Sequence[float]) -> dict[str, float]:
    """The mean of a 0/1 ``indicator`` with its 95% bootstrap interval: ``{"mean", "ci_low", "ci_high"}``."""
    low, high = bootstrap_interval([list(indicator)])
    return {"mean": float(np.mean(indicator)), "ci_low": low, "ci_high": high}


def faithfulness_cells(records: Sequence[dict], summaries: dict[str, Sequence[str]], splits: Sequence[str]) -> dict:
    """``{"cells": {source: {split: {class: {"mean", "ci_low", "ci_high"}, "n", "empty"}}}, "differences": {...}}``:
    the share of each split's summaries in each of `CLASSES` (95% bootstrap over contexts), the number of empty
    summaries, and the paired differences of ``own`` shares of `COMPARED`."""
    classes = {name: [faithfulness(s, r) for s, r in zip(texts, records, strict=True)] for name, texts in
               summaries.items()}  # fmt: skip
    cells, differences = {}, {}
    for split in splits:
        rows = [i for i, r in enumerate(records) if r["split"] == split]
        if not rows:
            raise ValueError(f"no held-out record of split {split!r}")
        for name, labels in classes.items():
            cells.setdefault(name, {})[split] = {
                **{c: share([float(labels[i] == c) for i in rows]) for c in CLASSES}, "n": len(rows),
                "empty": sum(not summaries[name][i].strip() for i in rows),
            }  # fmt: skip
        for better, worse in COMPARED:
            if better in classes and worse in classes:
                paired = [float(classes[better][i] == "own") - float(classes[worse][i] == "own") for i in rows]
                low, high = bootstrap_interval([paired])
                differences.setdefault(f"{better} - {worse}", {})[split] = {
                    "mean": float(np.mean(paired)), "ci_low": low, "ci_high": high,
                }  # fmt: skip
    return {"cells": cells, "differences": differences}


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def run_editing(
    config: ReadableConfig,
    records: Sequence[dict],
    summaries: dict[str, Sequence[str]],
    reward_model_for_seed: Callable[[int], object],
    output_dir: str | Path,
    edits: dict[str, Callable[[str, dict], str | None]] = EDITS,
) -> dict:
    """For each reward-model seed (``reward_model_for_seed(seed)``: a summary-reading reward model), source, edit
    of ``edits`` (`EDITS` on Pets, `STYLE_EDITS` on a style population) and split: the margins of the edited
    contested pairs under the summaries as written and as edited (`plus.judge.edit_margins`), kept in
    ``output_dir/edits.json`` after each seed (so a stopped run resumes; a file of another run is set aside).
    Returns ``{"cells": {source: {edit: {split: cell}}}, "seconds"}``; a cell holds
    ``follows`` (the share of pairs whose ranking flips), ``accuracy_before`` and ``accuracy_after``, each with a
    95% interval over seeds and pairs, and ``n`` (pairs edited); the ideal summary's ``accuracy_before`` is the
    reward model's contested accuracy under ideal summaries."""
    path = Path(output_dir) / "edits.json"
    key = {"config": asdict(config), "records": [r["user_id"] for r in records], "summaries": _digest(summaries)}
    if edits is not EDITS:
        key["edits"] = sorted(edits)
    stored = read_json(path) if path.exists() else None
    if stored is not None and stored.get("key") != as_read_back(key):
        path.rename(path.with_suffix(".json.stale"))  # another run's margins: kept aside, never mixed in
        stored = None
    margins: dict = (stored or {}).get("margins", {})
    seconds: dict = (stored or {}).get("seconds", {})
    for seed in tqdm([s for s in config.seeds if str(s) not in margins], desc="reward-model seeds"):
        start = time.perf_counter()
        reward_model = reward_model_for_seed(seed)
        by_seed = {}
        for source, texts in summaries.items():
            for edit_name, edit in edits.items():
                for split in config.splits:
                    rows = [i for i, r in enumerate(records) if r["split"] == split]
                    part, written = [records[i] for i in rows], [texts[i] for i in rows]
                    if not any(r.get("contested") and edit(s, r) for r, s in zip(part, written, strict=True)):
                        continue
                    kept, before, after = edit_margins(reward_model, part, written, edit, config.batch_size)
                    by_seed.setdefault(source, {}).setdefault(edit_name, {})[split] = {
                        "records": [rows[i] for i in kept], "before": before.tolist(), "after": after.tolist(),
                    }  # fmt: skip
        margins[str(seed)], seconds[str(seed)] = by_seed, time.perf_counter() - start
        write_json(path, {"key": key, "margins": margins, "seconds": seconds})
    cells: dict = {}
    first = margins[str(config.seeds[0])]
    for source, by_edit in first.items():
        for edit_name, by_split in by_edit.items():
            for split in by_split:
                per_seed = [margins[str(s)][source][edit_name][split] for s in config.seeds]
                before = [np.asarray(m["before"]) > 0 for m in per_seed]
                after = [np.asarray(m["after"]) > 0 for m in per_seed]
                cell = {"n": len(per_seed[0]["records"])}
                for metric, table in (("follows", [b != a for b, a in zip(before, after, strict=True)]),
                                      ("accuracy_before", before), ("accuracy_after", after)):  # fmt: skip
                    low, high = bootstrap_interval([t.astype(float) for t in table])
                    cell[metric] = {"mean": float(np.mean(np.concatenate(table))), "ci_low": low, "ci_high": high}
                cells.setdefault(source, {}).setdefault(edit_name, {})[split] = cell
    return {"cells": cells, "seconds": sum(seconds.values())}


def ideal_reward_models(profile_name: str, runs_dir: str | Path, config: ReadableConfig, output_dir: str | Path):
    """``seed -> reward model``: the Oracle reward model trained on notebook 04's training records of
    ``config.dataset`` with ideal summaries (`plus.control.ideal_reward_model`, the loop's reward-model settings),
    cached in ``output_dir/reward-model-seed-<seed>/checkpoint``."""
    from plus.coadapt.experiment import Ablation, ablation_settings
    from plus.control import ideal_reward_model

    ablation = Ablation(ablation_settings(profile_name), Path(runs_dir))
    train = ablation.split(config.dataset, train=True)

    def build(seed: int):
        loop_config = ablation.config(config.dataset, "plus", seed)
        directory = Path(output_dir) / f"reward-model-seed-{seed}"
        model = ideal_reward_model(loop_config, train, directory, epochs=config.epochs, seed=seed)
        return model.requires_grad_(False)

    return build


def gallery(records: Sequence[dict], summaries: dict[str, Sequence[str]], config: ReadableConfig) -> list[dict]:
    """The first ``gallery_size`` held-out contexts of each split, one row per (context, summarizer): the user,
    their true preference over the contested pair (the ground truth), the summary of that context (the ideal
    summary first, as the reference) and its `faithfulness` class."""
    rows = []
    for split in config.splits:
        chosen = [i for i, r in enumerate(records) if r["split"] == split][: config.gallery_size]
        for i in chosen:
            own, other = contested_animals(record_profile(records[i]))
            for name, texts in summaries.items():  # the ideal summary first: the reference
                rows.append({"split": split, "context": i, "user": records[i]["user_id"],
                             "prefers (ground truth)": f"{own}s over {other}s", "summarizer": LABELS[name],
                             "names": faithfulness(texts[i], records[i]), "summary": texts[i]})  # fmt: skip
    return rows


def readable_rows(config: ReadableConfig, faith: dict, editing: dict) -> list[dict]:
    """The ``table.json`` rows (``../shared/RESULTS.md``): ``faithfulness/<class>`` per summarizer and split (one
    training seed), and ``edit_follows/<edit>`` and ``edit_accuracy_before|after/<edit>`` per source, edit and split
    (the reward-model seeds)."""
    rows = []
    for source, by_split in faith["cells"].items():
        for split, cell in by_split.items():
            rows += [
                {"dataset": config.dataset, "split": split, "subset": "all", "method": source,
                 "metric": f"faithfulness/{c}", **cell[c], "n": cell["n"], "seeds": [0], "reported": None}
                for c in CLASSES
            ]  # fmt: skip
    return rows + editing_rows(editing, config.seeds, lambda source: (config.dataset, source))


def editing_rows(editing: dict, seeds: Sequence[int], where: Callable[[str], tuple[str, str]]) -> list[dict]:
    """`run_editing`'s cells as ``table.json`` rows: ``edit_follows/<edit>`` and ``edit_accuracy_before|after/<edit>``
    per source, edit and split, contested subset, over the reward-model ``seeds``; ``where(source)`` gives the
    row's (data set, method)."""
    rows = []
    for source, by_edit in editing["cells"].items():
        dataset, method = where(source)
        for edit_name, by_split in by_edit.items():
            for split, cell in by_split.items():
                for metric in ("follows", "accuracy_before", "accuracy_after"):
                    name = "edit_follows" if metric == "follows" else f"edit_{metric}"
                    rows.append({
                        "dataset": dataset, "split": split, "subset": "contested", "method": method,
                        "metric": f"{name}/{edit_name}", **cell[metric], "n": cell["n"], "seeds": list(seeds),
                        "reported": None,
                    })  # fmt: skip
    return rows


BARS = {"accuracy": 0.95, "swap": 0.95, "reword": 0.05}
"""Sanity bars of the editing experiment on the ``test`` split (the reward model's training animals)."""


def readable_bars(faith: dict, editing: dict, split: str = "test") -> list[dict]:
    """The checks that must hold before the summarizers are compared: the measure reads every ideal summary as
    naming the user's own animal only; the reward model reads the summary (contested accuracy under ideal
    summaries), follows the key-fact edit and does not follow the control edit."""
    ideal = faith["cells"]["ideal-summary"][split]["own"]["mean"]
    edits = editing["cells"]["ideal-summary"]
    accuracy = edits["swap"][split]["accuracy_before"]["mean"]
    swapped, reworded = edits["swap"][split]["follows"]["mean"], edits["reword"][split]["follows"]["mean"]
    return [
        {"bar": "the faithfulness measure reads every ideal summary as naming the user's own animal only",
         "value": ideal, "holds": ideal == 1.0},
        {"bar": f"the reward model ranks >= {100 * BARS['accuracy']:.0f}% of contested pairs right under ideal "
                "summaries",
         "value": accuracy, "holds": accuracy >= BARS["accuracy"]},
        {"bar": f"swapping the ideal summary's animal flips >= {100 * BARS['swap']:.0f}% of its rankings",
         "value": swapped, "holds": swapped >= BARS["swap"]},
        {"bar": f"rewording the ideal summary (fact kept) flips <= {100 * BARS['reword']:.0f}% of its rankings",
         "value": reworded, "holds": reworded <= BARS["reword"]},
    ]  # fmt: skip


def _verdict(cell: dict, level: float = 0.0) -> str:
    if cell["ci_low"] > level:
        return "higher than"
    return "lower than" if cell["ci_high"] < level else "no different from"


def readable_note(faith: dict, editing: dict) -> str:
    """What the run shows, in words, every figure read from the results: the bars, faithfulness per summarizer,
    the paired difference, and how often rankings follow each edit."""
    bars = readable_bars(faith, editing)
    held = [b for b in bars if b["holds"]]
    lines = [f"Sanity bars: {len(held)} of {len(bars)} hold" + (
        "." if len(held) == len(bars) else
        " (" + "; ".join(f"fails: {b['bar']}" for b in bars if not b["holds"]) + "), so the comparison below does "
        "not mean what it would otherwise.")]  # fmt: skip
    for source, by_split in faith["cells"].items():
        if source == "ideal-summary":
            continue
        parts = [f"{split}: {format_interval(cell['own'])}% name only the user's own animal, "
                 f"{format_interval(cell['other'])}% only the other one"
                 for split, cell in by_split.items()]  # fmt: skip
        lines.append(f"- {LABELS[source]} summaries, {parts[0]}" + "".join(f"; {p}" for p in parts[1:]) + ".")
    for key, by_split in faith["differences"].items():
        better, worse = key.split(" - ")
        parts = [f"{split}: {format_interval(cell)} points, {_verdict(cell)} it" for split, cell in by_split.items()]
        said = f"- {LABELS[better]} minus {LABELS[worse]}, own-animal share per context: "
        lines.append(said + "; ".join(parts) + ".")
    for source, by_edit in editing["cells"].items():
        parts = [f"{edit} on {split} ({cell['n']} pairs): {format_interval(cell['follows'])}%"
                 for edit, by_split in by_edit.items() for split, cell in by_split.items()]  # fmt: skip
        lines.append(f"- Rankings that follow an edit of {LABELS[source]} summaries: " + "; ".join(parts) + ".")
    lines.append(readable_verdicts(faith, editing))
    return "\n".join(lines)


def readable_verdicts(faith: dict, editing: dict, split: str = "test") -> str:
    """Which of the paper's two claims hold here, in one paragraph read from the results: PLUS summaries state
    the user's preference more often than PLUS-untrained ones (the paired difference's interval above 0), and
    an edit of a PLUS summary's key fact moves the reward model's ranking (`BARS` ``swap`` of its pairs)."""
    said = []
    difference = faith["differences"].get("plus - plus-untrained", {}).get(split)
    if difference is None:
        said.append("Without PLUS and PLUS-untrained summaries, faithfulness is not compared.")
    else:
        verdict = "holds here" if difference["ci_low"] > 0 else "does not hold here (no difference at this power)"
        said.append(f"On `{split}`, that PLUS summaries state the user's preference more often than PLUS-untrained "
                    f"ones {verdict}.")  # fmt: skip
    swap_cell = editing["cells"].get("plus", {}).get("swap", {}).get(split)
    if swap_cell is None:
        said.append("No PLUS summary names one animal of its user's pair, so none is edited.")
    else:
        verdict = "holds here" if swap_cell["follows"]["mean"] >= BARS["swap"] else "does not hold here"
        said.append(f"That editing the animal a PLUS summary names moves the reward model's ranking (of >= "
                    f"{100 * BARS['swap']:.0f}% of the {swap_cell['n']} contested pairs whose PLUS summary names one "
                    f"animal of the pair) {verdict}.")  # fmt: skip
    for other, cell in editing["cells"].get("ideal-summary", {}).get("swap", {}).items():
        if other != split and cell["follows"]["mean"] < BARS["swap"]:
            said.append(f"On `{other}` the reward model follows even the ideal summary's edit in only "
                        f"{format_interval(cell['follows'])}% of pairs: it never read those animals in training, so "
                        f"the edits there say nothing about the summaries.")  # fmt: skip
    return "**What holds here.** " + " ".join(said)
