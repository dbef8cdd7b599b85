"""Flexible contexts: do the context readers learn a user from unlabelled conversations or a self-written user
guide as well as from labelled pairs?

The same UF-P-4-like users, target pairs and labels under three kinds of context (`CONTEXT_KINDS`, built by
`plus.data.flexible`): 2-4 labelled pairs (the benchmark's), three unlabelled past conversations, and a short
first-person user guide. Each context reader (`READERS`: ICL reads the context as text, PLUS-untrained reads
SmolLM2's summary of it) is trained and evaluated once per kind, three seeds, with `plus.evaluation.run_benchmark`;
BTL (user-blind) and Oracle (the true description) are run once, on the labelled-pair set: neither reads the
context, and the records are otherwise the same. Because every kind has the same test pairs in the same order,
two cells are compared pair by pair (`paired_difference`).

Whether the summaries state the user's style at all: `summary_faithfulness` reads which of the user's poles each
held-out context's summary names (`plus.readable.style_faithfulness`), beside the true descriptions.

The paper reports PLUS (trained) 9-16% above ICL on flexible contexts (`REPORTED_GAIN`); PLUS itself is not run
here (one co-adaptation run per kind and seed is 54-97 min at the cpu profile), so PLUS-untrained is compared
with ICL, and the page says so.

Departures from the PLUS paper's flexible-context experiment:

- the users are the UF-P-4-like synthetic ones and their flexible contexts are built from the same response bank
  (`plus.data.flexible`), not real users' chat logs and self-descriptions: the true preference is known, so a
  context reader that learns nothing is seen as such (BTL, the user-blind model, is the floor);
- PLUS-untrained (the frozen summarizer) stands in for the trained PLUS, which is not run per kind at the cpu
  profile (one co-adaptation run per kind and seed is about an hour there);
- at the cpu profile, 256 training records and 200 test pairs per kind (at the benchmark's 512 x 400 this table
  would be ~7 h of 2-core compute, estimated from the benchmark's per-seed times), so the table's labelled-pair
  column is not the benchmark's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from plus.artifacts import read_json, write_json
from plus.evaluation import (
    CHANCE_BAND,
    MAJORITY,
    BenchmarkConfig,
    benchmark_config,
    bootstrap_interval,
    find_row,
    format_interval,
)

POPULATION = "uf-p-4-synthetic"
"""The labelled-pair data set; its flexible versions are ``<POPULATION>-conversations`` and ``-user-guide``."""
CONTEXT_KINDS: dict[str, str] = {
    "labelled pairs": POPULATION,
    "conversations": f"{POPULATION}-conversations",
    "user guide": f"{POPULATION}-user-guide",
}
"""Context kind (as the page names it) -> data set of `plus.data.build_dataset`."""
READERS: tuple[str, ...] = ("icl", "plus-untrained")
"""Methods that read the context, run on every kind."""
REFERENCES: tuple[str, ...] = ("btl", "oracle")
"""Methods that do not read the context, run once, on the labelled-pair set."""
REPORTED_GAIN = "9-16%"
"""The PLUS paper's flexible-context result, as REPORTED (REFERENCE.md): PLUS above ICL, per kind; a quotation."""
SPLIT = "test"
"""The held-out split of the table (seen users, held-out pairs; every UF-P pair is contested)."""


def flexible_config(profile_name: str, **changes) -> BenchmarkConfig:
    """The benchmark config of this experiment at a profile (`plus.evaluation.benchmark_config`) over the three
    kinds, `REFERENCES` only on the labelled-pair set, split `SPLIT`. cpu: 256 training records x 8 epochs and 200
    test pairs (every one contested; why, in the module's departures). Measured per seed at this config on 2 cores:
    BTL ~4 min, Oracle ~5 min, ICL ~5 min on a user guide, ~10-12 min on conversations and labelled pairs (inputs
    at the 256-token cap), PLUS-untrained ~6-7 min, plus ~25 min for SmolLM2's 456 summaries of each kind."""
    from plus.config import get_profile

    cpu = get_profile(profile_name).name == "cpu"
    sizes = {"num_train": 256, "num_test": 200} if cpu else {}
    datasets = tuple(CONTEXT_KINDS.values())
    skip = tuple(f"{dataset}:{method}" for dataset in datasets[1:] for method in REFERENCES)
    methods = REFERENCES + READERS
    config = benchmark_config(profile_name, datasets=datasets, methods=methods, skip=skip, splits=(SPLIT,), **sizes)
    return replace(config, **changes)


def _outcomes(results: dict, dataset: str, method: str) -> list[list[float]] | None:
    """Per seed, the contested pairs' credits of one cell of a `run_benchmark` artifact on `SPLIT` (None if not
    run)."""
    runs = results["runs"].get(dataset, {}).get(method)
    return [run[SPLIT]["contested_outcomes"] for run in runs] if runs else None


def paired_difference(results: dict, first: tuple[str, str], second: tuple[str, str]) -> dict | None:
    """Accuracy of cell ``first`` minus cell ``second`` ((data set, method) each) on the contested `SPLIT` pairs,
    pair by pair and seed by seed (the kinds share their test pairs, in order, and their seeds): ``mean``, a 95%
    bootstrap interval over seeds and pairs, ``n`` pairs. None when either cell is not run."""
    a, b = _outcomes(results, *first), _outcomes(results, *second)
    if a is None or b is None:
        return None
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b, strict=True)):
        raise ValueError(f"{first} and {second} do not share their seeds and test pairs; cannot pair them")
    differences = [[x - y for x, y in zip(row_a, row_b, strict=True)] for row_a, row_b in zip(a, b, strict=True)]
    low, high = bootstrap_interval(differences)
    mean = sum(map(sum, differences)) / sum(map(len, differences))
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": len(differences[0])}


def ceiling_credits(config: BenchmarkConfig) -> list[float]:
    """Per contested `SPLIT` pair of the labelled-pair set (the order `run_benchmark` scores them in), the credit of
    the training users' majority vote (`plus.data.schema.majority_credit`): the user-blind ceiling, pair by pair."""
    from plus.data import build_dataset

    records = build_dataset(
        CONTEXT_KINDS["labelled pairs"], config.data_seed, num_train=config.num_train, num_test=config.num_test
    )
    return [r["majority_credit"] for r in records if r["split"] == SPLIT and r.get("contested") is True]


def comparisons(results: dict, ceiling: Sequence[float] | None = None) -> list[dict]:
    """The experiment's paired differences (`paired_difference`), each with what it asks: per kind, PLUS-untrained
    minus ICL (the paper's comparison, with PLUS-untrained for PLUS), each reader minus BTL and, given its per-pair
    ``ceiling`` (`ceiling_credits`), minus the user-blind ceiling (does it learn the user from this kind at all:
    no user-blind model beats the ceiling); per reader and flexible kind, minus the same reader on labelled pairs.
    Cells not run are left out."""
    labelled = CONTEXT_KINDS["labelled pairs"]
    if ceiling is not None:  # a pseudo-cell: the same credits under every seed
        seeds = len(results["config"]["seeds"])
        per_pair = {SPLIT: {"contested_outcomes": list(ceiling)}}
        results = {**results, "runs": {**results["runs"], MAJORITY: {MAJORITY: [per_pair] * seeds}}}
    asks = []
    for kind, dataset in CONTEXT_KINDS.items():
        asks.append((kind, "plus-untrained", (dataset, "plus-untrained"), (dataset, "icl"), "icl"))
        for reader in READERS:
            asks.append((kind, reader, (dataset, reader), (labelled, "btl"), "btl"))
            if ceiling is not None:
                asks.append((kind, reader, (dataset, reader), (MAJORITY, MAJORITY), MAJORITY))
            if dataset != labelled:
                asks.append((kind, reader, (dataset, reader), (labelled, reader), "labelled-pairs"))
    out = []
    for kind, method, first, second, against in asks:
        cell = paired_difference(results, first, second)
        if cell is not None:
            out.append({"kind": kind, "dataset": first[0], "method": method, "minus": against, **cell})
    return out


def comparison_rows(results: dict, ceiling: Sequence[float] | None = None) -> list[dict]:
    """`comparisons` as ``table.json`` rows (``../shared/RESULTS.md``): metric ``accuracy_minus/<the other cell>``
    (``icl``, ``btl``, ``majority``: the user-blind ceiling, or ``labelled-pairs``: the same method on labelled
    pairs), contested subset."""
    seeds = list(results["config"]["seeds"])
    return [
        {"dataset": c["dataset"], "split": SPLIT, "subset": "contested", "method": c["method"],
         "metric": f"accuracy_minus/{c['minus']}", "mean": c["mean"], "ci_low": c["ci_low"], "ci_high": c["ci_high"],
         "n": c["n"], "seeds": seeds, "reported": None}
        for c in comparisons(results, ceiling)
    ]  # fmt: skip


def kind_table(rows: Sequence[dict], labels: dict[str, str]):
    """A pandas DataFrame of the accuracies (%, contested `SPLIT` pairs, "mean [low, high]"): one row per method
    (named by ``labels``), one column per context kind, and the paper's reported UF-P-4 number (labelled pairs)
    beside; the references (BTL, Oracle, the user-blind ceiling) read no context, so they fill the labelled-pair
    column only. Empty where a run is absent."""
    import pandas as pd

    table = {}
    for method, label in labels.items():
        row = {}
        for kind, dataset in CONTEXT_KINDS.items():
            cell = find_row(rows, dataset, SPLIT, "contested", method)
            row[kind] = "" if cell is None else format_interval(cell)
        cell = find_row(rows, CONTEXT_KINDS["labelled pairs"], SPLIT, "contested", method)
        reported = None if cell is None else cell["reported"]
        row["reported, labelled pairs"] = "" if reported is None else f"{100 * reported:.1f}"
        table[label] = row
    return pd.DataFrame(table).T


def flexible_bars(rows: Sequence[dict]) -> list[dict]:
    """The checks that must hold before the readers are compared, on the labelled-pair set's contested `SPLIT`
    pairs: Oracle clearly above BTL (intervals disjoint: this reward model can read a statement of the user's
    preference), and BTL within `plus.evaluation.CHANCE_BAND` of the user-blind ceiling (the pairs are contested:
    a model that ignores the user gains nothing beyond the majority). ``holds`` is None where a run is absent."""
    dataset = CONTEXT_KINDS["labelled pairs"]
    oracle, btl = (find_row(rows, dataset, SPLIT, "contested", m) for m in ("oracle", "btl"))
    ceiling = find_row(rows, dataset, SPLIT, "contested", MAJORITY)
    level = 0.5 if ceiling is None else ceiling["mean"]
    return [
        {"bar": "Oracle clearly above BTL (its lower bound above BTL's upper bound)",
         "value": None if oracle is None else oracle["ci_low"],
         "threshold": None if btl is None else btl["ci_high"],
         "holds": None if oracle is None or btl is None else oracle["ci_low"] > btl["ci_high"]},
        {"bar": f"BTL within {100 * CHANCE_BAND:.0f} points of the user-blind ceiling ({100 * level:.1f}%)",
         "value": None if btl is None else btl["mean"], "threshold": level,
         "holds": None if btl is None else abs(btl["mean"] - level) <= CHANCE_BAND},
    ]  # fmt: skip


def _sign(cell: dict) -> str:
    if cell["ci_low"] > 0:
        return "above"
    return "below" if cell["ci_high"] < 0 else "no different from"


def _points(cell: dict) -> str:
    return f"{100 * cell['mean']:+.1f} [{100 * cell['ci_low']:+.1f}, {100 * cell['ci_high']:+.1f}] points"


def flexible_note(
    results: dict, rows: Sequence[dict], labels: dict[str, str], ceiling: Sequence[float] | None = None
) -> str:
    """What the run shows, in words, every figure read from the results: the bars and what a failed one means for
    the comparisons; per kind, each reader's accuracy and its paired differences (`comparisons`, with the per-pair
    user-blind ``ceiling`` when given); and whether the paper's claim (PLUS above ICL on flexible contexts) holds
    here."""
    bars = flexible_bars(rows)
    held = [b for b in bars if b["holds"]]
    lines = [f"Sanity bars: {len(held)} of {len(bars)} hold."]
    oracle_bar, btl_bar = bars
    if oracle_bar["holds"] is False:
        lines.append("Oracle is not clearly above BTL: this reward model does not read even a true statement of the "
                     "user's preference, so no comparison below says much about the contexts.")  # fmt: skip
    if btl_bar["holds"] is False:
        lines.append("BTL is not at the user-blind ceiling, so \"vs BTL\" overstates what a reader learns of the "
                     "user; \"vs the user-blind ceiling\" is the test of that (no user-blind model beats it), and the "
                     "readers' comparisons with each other do not depend on BTL.")  # fmt: skip
    against = {"btl": "vs BTL", MAJORITY: "vs the user-blind ceiling", "labelled-pairs": "vs itself on labelled pairs",
               "icl": "vs ICL"}  # fmt: skip
    verdicts = {"above": "above", "below": "below", "no different from": "no difference"}
    found = comparisons(results, ceiling)
    lines[-1] += "\n"
    for kind, dataset in CONTEXT_KINDS.items():
        parts = []
        for reader in READERS:
            cell = find_row(rows, dataset, SPLIT, "contested", reader)
            if cell is None:
                parts.append(f"{labels[reader]} not run at this profile")
                continue
            said = [f"{against[c['minus']]} {_points(c)}: {verdicts[_sign(c)]}" for c in found
                    if c["dataset"] == dataset and c["method"] == reader]  # fmt: skip
            parts.append(f"{labels[reader]} {format_interval(cell)}% (" + "; ".join(said) + ")")
        lines.append(f"- {kind}: " + "; ".join(parts) + ".")
    flexible = [c for c in found if c["minus"] == "icl" and c["kind"] != "labelled pairs"]
    if not flexible:
        verdict = "is not tested here: PLUS-untrained and ICL were not both run on a flexible kind."
    elif all(c["ci_low"] > 0 for c in flexible):
        kinds = " and ".join(c["kind"] for c in flexible)
        verdict = f"holds here for PLUS-untrained (the trained PLUS is not run): above ICL on {kinds}."
    else:
        parts = [f"{c['kind']}: {_sign(c)} ICL" for c in flexible]
        verdict = ("does not hold here with PLUS-untrained standing in for PLUS (the trained PLUS is not run): "
                   + "; ".join(parts) + ".")  # fmt: skip
    seeds = len(results["config"]["seeds"])
    lines.append(f"\nDifferences are paired, in points, over the same contested test pairs and {seeds} seed(s) "
                 f"(\"above\"/\"below\": the 95% interval excludes 0). **What holds here.** The paper reports PLUS "
                 f"{REPORTED_GAIN} above ICL on flexible contexts. On held-out pairs of the users seen in training "
                 f"(where a context that only identifies the user is enough), that claim {verdict}")  # fmt: skip
    return "\n".join(lines)


def _summaries(config: BenchmarkConfig, output_dir: str, records: Sequence[dict]) -> dict[str, str]:
    """{context: PLUS-untrained's summary} of ``records``, read from (or written to) the experiment's cache
    ``output_dir/summaries.jsonl`` with the runs' summarizer settings."""
    from plus.baselines import plus_untrained_summaries

    return plus_untrained_summaries(
        records,
        config.summarizer_model,
        config.max_summary_tokens,
        f"{output_dir}/summaries.jsonl",
        seed=config.data_seed,
        batch_size=config.summary_batch_size,
    )


SUMMARY_SOURCES = {"oracle": "the true description", "plus-untrained": "PLUS-untrained"}
"""Whose statements of the user `summary_faithfulness` reads: the true description (the reference: the word list
must read each as the user's own pole), and PLUS-untrained's summaries of each kind of context."""


def summary_faithfulness(config: BenchmarkConfig, output_dir: str) -> dict[str, dict[str, dict]]:
    """``{kind: {source: {class: {"mean", "ci_low", "ci_high"}, "n"}}}``: per context kind, which of the user's
    poles each distinct `SPLIT` context's statement names (`plus.readable.style_faithfulness`: own, other, both,
    neither), as shares with a 95% bootstrap interval over the distinct contexts (a user guide recurs across its
    user's records, so it counts once). Sources: `SUMMARY_SOURCES` (the true description, once per user, and
    PLUS-untrained's summary, read from ``output_dir/summaries.jsonl``; summarized there if absent). There is one
    summary per context (sampled once, with the data seed), the one every reader's run reads, so no seeds here."""
    from plus.data import build_dataset
    from plus.readable import CLASSES, share, style_faithfulness

    out = {}
    for kind, dataset in CONTEXT_KINDS.items():
        records = build_dataset(dataset, config.data_seed, num_train=config.num_train, num_test=config.num_test)
        by_context = {r["context"]: r for r in records if r["split"] == SPLIT}
        if not by_context:
            raise ValueError(f"{dataset}: no {SPLIT!r} record to read summaries of")
        summaries = _summaries(config, output_dir, list(by_context.values()))
        users = {r["user_id"]: r for r in by_context.values()}
        statements = {
            "oracle": [(r["ground_truth"]["description"], r) for r in users.values()],
            "plus-untrained": [(summaries[context], r) for context, r in by_context.items()],
        }
        out[kind] = {}
        for source, pairs in statements.items():
            labels = [style_faithfulness(text, record) for text, record in pairs]
            cells = {name: share([float(label == name) for label in labels]) for name in CLASSES}
            out[kind][source] = cells | {"n": len(labels)}
    return out


def faithfulness_rows(faith: dict[str, dict[str, dict]], config: BenchmarkConfig) -> list[dict]:
    """`summary_faithfulness` as ``table.json`` rows: metric ``faithfulness/<class>``, per kind's data set and
    source, `SPLIT`, subset ``all``, the summaries' one seed (the data seed)."""
    from plus.readable import CLASSES

    return [
        {"dataset": CONTEXT_KINDS[kind], "split": SPLIT, "subset": "all", "method": source,
         "metric": f"faithfulness/{name}", **cell[name], "n": cell["n"], "seeds": [config.data_seed],
         "reported": None}
        for kind, by_source in faith.items() for source, cell in by_source.items() for name in CLASSES
    ]  # fmt: skip


def faithfulness_table(faith: dict[str, dict[str, dict]]):
    """A pandas DataFrame: per (kind, source), the share (%) of statements naming the user's own pole, the opposite
    one, both or neither, with its 95% interval, and the number of distinct contexts (users, for the true
    description)."""
    import pandas as pd

    from plus.readable import CLASSES

    names = {"own": "own pole", "other": "opposite pole", "both": "both", "neither": "neither"}
    assert set(names) == set(CLASSES)
    table = {
        (kind, SUMMARY_SOURCES[source]): {**{f"{names[c]} (%)": format_interval(cell[c]) for c in CLASSES},
                                          "statements": cell["n"]}
        for kind, by_source in faith.items() for source, cell in by_source.items()
    }  # fmt: skip
    return pd.DataFrame(table).T


def faithfulness_note(faith: dict[str, dict[str, dict]]) -> str:
    """Markdown read from `summary_faithfulness`: whether the word list reads every true description as the user's
    own pole (the bar), then per kind the shares of PLUS-untrained's summaries that name the user's own pole and
    the opposite one, and whether own exceeds opposite (intervals disjoint)."""
    reference = [by_source["oracle"]["own"]["mean"] for by_source in faith.values()]
    holds = all(value == 1.0 for value in reference)
    consequence = "" if holds else ", so the shares below do not measure faithfulness"
    lines = [
        f"Sanity bar: the word list reads {'every' if holds else 'not every'} true description as the user's own "
        f"pole ({100 * min(reference):.0f}% at the least){consequence}."
    ]
    for kind, by_source in faith.items():
        cell = by_source["plus-untrained"]
        own, other = cell["own"], cell["other"]
        verdict = ("more often than" if own["ci_low"] > other["ci_high"] else
                   "less often than" if own["ci_high"] < other["ci_low"] else "no more often than")  # fmt: skip
        lines.append(
            f"- {kind}: PLUS-untrained's summaries of {cell['n']} distinct contexts name the user's own pole in "
            f"{format_interval(own)}% of them and the opposite pole in {format_interval(other)}% ({verdict} the "
            f"opposite); {format_interval(cell['neither'])}% name neither."
        )
    return "\n".join(lines)


def oracle_reward_models(config: BenchmarkConfig, output_dir: str):
    """``seed -> reward model``: the Oracle of the labelled-pair set (it reads the true description), trained as
    the table's Oracle runs are (``config.reward_model``, ``config.train``, that seed, the same training records),
    its weights kept in ``output_dir/oracle-rm-seed-<seed>/checkpoint`` and loaded from there when present (the
    training time in ``train.json`` there)."""
    from plus.baselines import BaselineConfig, build_method, load_method
    from plus.data import build_dataset
    from plus.train import seed_everything, train_reward_model

    def build(seed: int):
        directory = Path(output_dir) / f"oracle-rm-seed-{seed}"
        if (directory / "checkpoint" / "config.json").exists():
            return load_method(directory / "checkpoint").model.requires_grad_(False)
        records = build_dataset(
            CONTEXT_KINDS["labelled pairs"], config.data_seed, num_train=config.num_train, num_test=config.num_test
        )
        seed_everything(seed)
        method = build_method(BaselineConfig("oracle", reward_model=config.reward_model), seed=seed)
        train = [r for r in records if r["split"] == "train"]
        trained = train_reward_model(method, train, replace(config.train, seed=seed), directory)
        write_json(directory / "train.json", {"seconds": trained.seconds, "steps": trained.num_steps})
        return method.model.requires_grad_(False)

    return build


def oracle_training_seconds(config: BenchmarkConfig, output_dir: str) -> float | None:
    """The training time of `oracle_reward_models`' reward models, summed over ``config``'s seeds, as measured when
    each was trained (``train.json`` beside its checkpoint); None when one has no record."""
    paths = [Path(output_dir) / f"oracle-rm-seed-{seed}" / "train.json" for seed in config.seeds]
    if not all(path.exists() for path in paths):
        return None
    return sum(read_json(path)["seconds"] for path in paths)


def other_user_edit(config: BenchmarkConfig):
    """``edit(statement, record)``: the within-training edit of a true description. The record's user's
    description is replaced by the description of another training user who ranks the record's eval pair the
    other way (the first in the population's order; their rankings from the response bank's exact attribute
    scores), so a reward model that follows the edit flips the pair; None for any other statement, or when every
    other training user agrees with this one on the pair."""
    from plus.data.attributes import UF_POPULATIONS, build_response_bank, ground_truth_reward, user_ground_truth

    bank = build_response_bank(config.data_seed)
    users = [user_ground_truth(pole) for pole in UF_POPULATIONS[POPULATION.removesuffix("-synthetic")]]

    def edit(statement: str, record: dict) -> str | None:
        if statement != record["ground_truth"]["description"]:
            return None
        chosen, rejected = bank.scores_of(record["eval_chosen"]), bank.scores_of(record["eval_rejected"])
        for user in users:
            if ground_truth_reward(user["profile"], chosen) < ground_truth_reward(user["profile"], rejected):
                return user["description"]
        return None

    return edit


def style_editing(config: BenchmarkConfig, output_dir: str, reward_model_for_seed=None) -> dict:
    """The editing experiment on this population (`plus.readable.run_editing` with `plus.readable.STYLE_EDITS`):
    a reward model that reads the user's statement (`oracle_reward_models`, one per seed of ``config``) scores the
    contested `SPLIT` pairs under each statement as written and as edited: the user's pole swapped for its
    opposite (``swap``: a pole no training user holds), reworded with the pole kept (``reword``, the control), or,
    for the true descriptions, replaced by another training user's that ranks the pair the other way
    (``other-user``, `other_user_edit`: an edit within what the reward model was trained on). Statements: the true
    descriptions (source ``oracle``) and PLUS-untrained's summaries of each kind of context (source: the kind;
    those that name one side of the user's attribute only), the kinds sharing their test pairs in order. Margins
    are kept in ``output_dir/edits.json`` (a stopped run resumes; a re-execution reads them back)."""
    from plus.data import build_dataset
    from plus.readable import STYLE_EDITS, ReadableConfig, run_editing

    held = {}
    for kind, dataset in CONTEXT_KINDS.items():
        records = build_dataset(dataset, config.data_seed, num_train=config.num_train, num_test=config.num_test)
        held[kind] = [r for r in records if r["split"] == SPLIT]
    base = held["labelled pairs"]
    summaries = {"oracle": [r["ground_truth"]["description"] for r in base]}
    for kind, records in held.items():
        written = _summaries(config, output_dir, records)
        summaries[kind] = [written[r["context"]] for r in records]
    readable = ReadableConfig(dataset=POPULATION, splits=(SPLIT,), seeds=tuple(config.seeds),
                              epochs=config.train.num_epochs, batch_size=config.eval_batch_size)  # fmt: skip
    builder = reward_model_for_seed or oracle_reward_models(config, output_dir)
    edits = {**STYLE_EDITS, "other-user": other_user_edit(config)}
    return run_editing(readable, base, summaries, builder, output_dir, edits=edits)


def editing_rows(editing: dict, config: BenchmarkConfig) -> list[dict]:
    """`style_editing` as ``table.json`` rows (`plus.readable.editing_rows`), contested `SPLIT` pairs, per source:
    ``oracle`` on the labelled-pair set, PLUS-untrained on each kind's."""
    from plus.readable import editing_rows as rows_of

    def where(source: str) -> tuple[str, str]:
        return (POPULATION, "oracle") if source == "oracle" else (CONTEXT_KINDS[source], "plus-untrained")

    return rows_of(editing, config.seeds, where)


def editing_table(editing: dict):
    """A pandas DataFrame of `style_editing`: per statement (the true description, PLUS-untrained's summaries of
    each kind) and edit, the pairs edited, the share of rankings that flip, and the accuracy under the statement
    as written and as edited (%, 95% intervals)."""
    import pandas as pd

    rows = []
    for source, by_edit in editing["cells"].items():
        for edit, by_split in by_edit.items():
            cell = by_split[SPLIT]
            rows.append({
                "statement": "true description" if source == "oracle" else f"PLUS-untrained, {source}",
                "edit": edit, "pairs": cell["n"], "flips (%)": format_interval(cell["follows"]),
                "accuracy as written (%)": format_interval(cell["accuracy_before"]),
                "accuracy as edited (%)": format_interval(cell["accuracy_after"]),
            })  # fmt: skip
    return pd.DataFrame(rows).set_index(["statement", "edit"])


def editing_note(editing: dict) -> str:
    """Markdown read from `style_editing`: the editing bars on the true descriptions (`plus.readable.BARS`: the
    swap flips at least 95% of the rankings, the reword at most 5%), the reward model's accuracy under the
    descriptions as written and swapped, then per kind how often an edit of PLUS-untrained's summaries (those that
    name one side of the user's attribute) flips the ranking."""
    from plus.readable import BARS

    oracle = editing["cells"]["oracle"]
    swap, reword = oracle["swap"][SPLIT], oracle["reword"][SPLIT]
    bars = [swap["follows"]["mean"] >= BARS["swap"], reword["follows"]["mean"] <= BARS["reword"]]
    lines = [
        f"Sanity bars: {sum(bars)} of 2 hold (swapping the pole of the true description flips at least "
        f"{100 * BARS['swap']:.0f}% of the rankings: {format_interval(swap['follows'])}%; rewording it, the pole "
        f"kept, flips at most {100 * BARS['reword']:.0f}%: {format_interval(reword['follows'])}%).",
        f"- Under the true descriptions the reward model ranks {format_interval(swap['accuracy_before'])}% of the "
        f"{swap['n']} contested pairs right; under the swapped ones {format_interval(swap['accuracy_after'])}% "
        "(right by the user's own preference: a reward model that follows the edit falls below 50%).",
    ]
    other = oracle.get("other-user", {}).get(SPLIT)
    if other is not None:
        low, high = other["follows"]["ci_low"], other["follows"]["ci_high"]
        above, below = low > swap["follows"]["ci_high"], high < swap["follows"]["ci_low"]
        relation = "more often than" if above else "less often than" if below else "about as often as"
        lines.append(
            f"- Replacing the true description with another training user's, one who ranks the pair the other way, "
            f"flips {format_interval(other['follows'])}% of the {other['n']} rankings (accuracy by the user's own "
            f"preference: {format_interval(other['accuracy_after'])}%): the reward model follows an edit to a style "
            f"its training users hold {relation} one to a style none of them holds."
        )
    if not bars[0]:
        kept = " Here it ranks most pairs as it did before the edit." if swap["follows"]["mean"] < 0.5 else ""
        lines.append(
            "- The swapped pole is one no training user holds (each prefers one pole, never its opposite), so a "
            "reward model that tells the training users' descriptions apart need not read what a new one says." + kept
        )
    for kind in CONTEXT_KINDS:
        cell = editing["cells"].get(kind, {}).get("swap", {}).get(SPLIT)
        if cell is None:
            lines.append(f"- {kind}: no PLUS-untrained summary names one side of its user's attribute; none edited.")
            continue
        lines.append(
            f"- {kind}: on the {cell['n']} test pairs whose PLUS-untrained summary names one side of the user's "
            f"attribute, swapping the pole flips {format_interval(cell['follows'])}% of the rankings."
        )
    return "\n".join(lines)


def context_gallery(config: BenchmarkConfig, output_dir: str, num_users: int = 2, width: int = 400) -> list[dict]:
    """Per context kind, the first `SPLIT` record of each of the first ``num_users`` users: the user's true poles,
    the context (cut at ``width`` characters) and PLUS-untrained's summary of it, read from the experiment's
    summary cache ``output_dir/summaries.jsonl`` (generated there if absent: a few contexts)."""
    from plus.data import build_dataset

    out = []
    for kind, dataset in CONTEXT_KINDS.items():
        records = build_dataset(dataset, config.data_seed, num_train=config.num_train, num_test=config.num_test)
        shown: dict[str, dict] = {}
        for record in records:
            if record["split"] == SPLIT and len(shown) < num_users:
                shown.setdefault(record["user_id"], record)
        summaries = _summaries(config, output_dir, list(shown.values()))
        for user, record in shown.items():
            context = record["context"]
            cut = context if len(context) <= width else context[:width] + " [...]"
            out.append({"user": user, "prefers": ", ".join(record["ground_truth"]["poles"]), "kind": kind,
                        "context": cut, "PLUS-untrained summary": summaries[context]})  # fmt: skip
    return out
