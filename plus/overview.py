"""Results at a glance: each claim of both papers, the paper's reported value, ours with its 95% interval, and a
verdict, all read from the experiments' ``table.json`` files (``../shared/RESULTS.md``), never typed by hand.

A claim is a comparison that can be checked at any scale (`Claim.rule`):

- ``above``: method A's interval lies entirely above method B's (reproduced); entirely below (reversed);
  overlapping (no difference at this power, reported as not reproduced);
- ``same``: the two intervals overlap (no difference; reproduced), else not reproduced;
- ``chance``: the mean lies within 50 +- 5% (a user-blind model on contested pairs);
- ``ceiling``: the mean is at least 95%;
- ``wins``: a win rate's interval lies entirely above 50% (reproduced); entirely below (reversed);
- ``gain``: a paired difference's interval (a ``.../minus`` row: A minus B on the same items) lies entirely above
  0 (reproduced); entirely below (reversed).

A claim may carry sanity bars (`Claim.requires`), themselves claims: when one fails, the verdict is ``not
reproduced`` and names it, whatever the comparison gives.

Verdicts: ``reproduced``, ``not reproduced`` (with the reason), ``not tested at this scale`` (the rows are not in
any table: the run was left out or its notebook writes no table yet), ``needs data or models not available
offline`` (PRISM, GPT-4o, human raters). The reported values come from `plus.evaluation.REPORTED_PLUS_TABLE` and
`plus.factorization.experiment.REPORTED_ATTRIBUTES`, themselves quotations of REFERENCE.md (partly read from
secondary sources and off figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plus.artifacts import read_json
from plus.baselines import method_label
from plus.book import started_at
from plus.evaluation import CEILING, CHANCE_BAND, PAPER_COLUMNS, REPORTED_PLUS_TABLE, find_row, format_interval
from plus.factorization.experiment import METHOD_KEYS, REPORTED_ATTRIBUTES
from plus.personalize import REPORTED_WIN_RATE


@dataclass(frozen=True)
class Cell:
    """One row of an experiment's ``table.json``: the notebook (its stem) and the row's keys."""

    notebook: str
    dataset: str
    split: str
    subset: str
    method: str
    metric: str = "accuracy"


@dataclass(frozen=True)
class Claim:
    """A claim of one of the papers, the cells that test it and the paper's reported value for them."""

    paper: str
    claim: str
    rule: str
    """``above`` (cells[0] above cells[1]), ``same`` (no difference between them), ``chance``, ``ceiling``,
    ``wins`` or ``gain`` (cells[0])."""
    cells: tuple[Cell, ...] = ()
    reported: tuple[float | None, ...] = ()
    """The paper's value for each cell (a fraction), None where it gives none."""
    offline_blocker: str = ""
    """Non-empty: what the claim needs that this environment lacks (the verdict says so; ``cells`` is empty)."""
    requires: tuple[Claim, ...] = ()
    """Sanity bars: checks that must be reproduced before this claim's comparison means anything (e.g. the true
    description personalizes the generator at all); one that fails makes the verdict ``not reproduced``."""


def _plus(method: str, column: str) -> float | None:
    value = REPORTED_PLUS_TABLE.get(method, {}).get(column)
    return None if value is None else value / 100


def _pref(metric: str, method: str, k: int) -> float | None:
    """PReF's reported value of ``method`` after ``k`` answers; the single BT model ignores answers, so its
    (flat) line gives its value at any k."""
    values = REPORTED_ATTRIBUTES.get(metric, {}).get(method, {})
    if method == "Single BT" and values:
        return next(iter(values.values()))
    return values.get(k)


def _rm(method: str, column: str) -> Cell:
    """Notebook 03's contested-pairs cell of ``method`` in the paper's column ``column`` (`PAPER_COLUMNS`)."""
    dataset, split = PAPER_COLUMNS[column]
    return Cell("03_reward_models", dataset, split, "contested", method)


def _table_claim(claim: str, rule: str, column: str, *methods: str) -> Claim:
    """A PLUS-table claim about ``methods`` in ``column``, with the paper's value for each."""
    cells = tuple(_rm(method, column) for method in methods)
    return Claim("PLUS", claim, rule, cells, tuple(_plus(method_label(m), column) for m in methods))


def _new_user_claim(claim: str, metric: str, k: int, first: str, second: str) -> Claim:
    """A PReF claim that ``first`` beats ``second`` on a new user's ``metric`` after ``k`` answers (notebook 05)."""
    labels = {key: label for label, key in METHOD_KEYS.items()}
    cells = tuple(
        Cell("05_pref_factorization", "attributes", "test_new_users", "all", m, f"{metric}@{k}")
        for m in (first, second)
    )
    return Claim("PReF", claim, "above", cells, tuple(_pref(metric, labels[m], k) for m in (first, second)))


def _trained_summarizer_claim(column: str) -> Claim:
    """PLUS beats PLUS-untrained in ``column``: notebook 04's co-adaptation ablation, contested pairs."""
    dataset, split = PAPER_COLUMNS[column]
    cells = tuple(Cell("04_train_plus", dataset, split, "contested", m) for m in ("plus", "plus-untrained"))
    claim = f"PLUS (trained summarizer) beats PLUS-untrained on {column}"
    return Claim("PLUS", claim, "above", cells, (_plus("PLUS", column), _plus("PLUS-untrained", column)))


def _follows(notebook: str, dataset: str, method: str, summary: str) -> Claim:
    """The sanity bar of a zero-shot personalization claim: answers conditioned on ``summary`` (``method``, one that
    states the user's preference) win above 50%, so the generator follows a summary at all."""
    cell = Cell(notebook, dataset, "test", "all", method, "win_rate")
    return Claim("PLUS", f"answers conditioned on {summary} win above 50%", "wins", (cell,))


CLAIMS: tuple[Claim, ...] = (
    _table_claim("A user-blind BT model is at chance on the pairs Pets users disagree on", "chance", "Pets", "btl"),
    _table_claim(
        "The true user description (Oracle) puts the reward model at the ceiling on Pets", "ceiling", "Pets", "oracle"
    ),
    _table_claim("In-context learning (ICL) reaches the ceiling on Pets", "ceiling", "Pets", "icl"),
    _table_claim("VPL reaches the ceiling on Pets", "ceiling", "Pets", "vpl"),
    _table_claim("PLUS-untrained (frozen summarizer) beats BTL on Pets", "above", "Pets", "plus-untrained", "btl"),
    _table_claim(
        "ICL beats BTL on Pets-OOD (users who prefer animals no training user ranked)",
        "above",
        "Pets-OOD",
        "icl",
        "btl",
    ),
    _table_claim("Oracle beats BTL on UF-P-4", "above", "UF-P-4", "oracle", "btl"),
    _table_claim("Oracle beats BTL on UF-P-2", "above", "UF-P-2", "oracle", "btl"),
    _table_claim("VPL is no better than BTL on UF-P-4", "same", "UF-P-4", "vpl", "btl"),
    _trained_summarizer_claim("Pets"),
    _trained_summarizer_claim("Pets-OOD"),
    _trained_summarizer_claim("UF-P-2"),
    Claim(
        "PLUS",
        "PLUS beats BTL on PRISM",
        "above",
        reported=(_plus("PLUS", "PRISM"), _plus("BTL", "PRISM")),
        offline_blocker="the PRISM data set (not on PyPI)",
    ),
    Claim(
        "PLUS",
        "Answers conditioned on PLUS summaries win against default answers (paper: GPT-4o generator and judge; "
        "here: SmolLM2 on Pets, judged by the user's ground truth)",
        "wins",
        (Cell("05_generate_personalized", "pets-ood", "test", "all", "plus", "win_rate"),),
        (REPORTED_WIN_RATE,),
        requires=(_follows("05_generate_personalized", "pets-ood", "ideal-summary", "a summary naming the animal"),),
    ),
    Claim(
        "PLUS",
        "Answers conditioned on a summary of the user's guide win against default answers on a style population "
        "(paper: PLUS summaries, GPT-4o generator and judge; here: PLUS-untrained's summaries stand in, SmolLM2 "
        "on the UF-P-4-like users, judged by the style judge)",
        "wins",
        (Cell("05_generate_styles", "uf-p-4-synthetic", "test", "all", "plus-untrained-guide", "win_rate"),),
        (REPORTED_WIN_RATE,),
        requires=(_follows("05_generate_styles", "uf-p-4-synthetic", "oracle", "the true description"),),
    ),
    Claim(
        "PLUS",
        "PLUS summaries state the user's preference (name only the user's own Pets animal) more often than "
        "PLUS-untrained ones",
        "above",
        tuple(
            Cell("05_readable_summaries", "pets-ood", "test", "all", m, "faithfulness/own")
            for m in ("plus", "plus-untrained")
        ),
        (None, None),
    ),
    Claim(
        "PLUS",
        "Editing the animal a PLUS summary names flips a summary-reading reward model's ranking of the contested "
        "pairs (at least 95%)",
        "ceiling",
        (Cell("05_readable_summaries", "pets-ood", "test", "contested", "plus", "edit_follows/swap"),),
        (None,),
    ),
    Claim(
        "PLUS",
        "Swapping the style a user's statement names (its pole, e.g. detailed for brief) flips a statement-reading "
        "reward model's ranking of the contested pairs (at least 95%; the true descriptions of the UF-P-4-like users)",
        "ceiling",
        (Cell("05_flexible_contexts", "uf-p-4-synthetic", "test", "contested", "oracle", "edit_follows/swap"),),
        (None,),
    ),
    *(
        Claim(
            "PLUS",
            f"PLUS beats ICL when the context is {kind} (paper: 9-16% above ICL; here PLUS-untrained stands in "
            "for PLUS, on the UF-P-4-like users; ours: the paired difference, in points)",
            "gain",
            (
                Cell(
                    "05_flexible_contexts",
                    f"uf-p-4-synthetic-{suffix}",
                    "test",
                    "contested",
                    "plus-untrained",
                    "accuracy_minus/icl",
                ),
            ),
            (None,),
        )
        for kind, suffix in (("unlabelled past conversations", "conversations"), ("a user guide", "user-guide"))
    ),
    _new_user_claim(
        "After 10 answers PReF (active questions) ranks a new user's pairs better than one BT model",
        "auc",
        10,
        "pref-active",
        "btl",
    ),
    _new_user_claim("Active questions beat random ones at 40 answers", "auc", 40, "pref-active", "pref-random"),
    _new_user_claim("After 10 answers PReF beats VPL", "auc", 10, "pref-active", "vpl"),
    _new_user_claim("After 10 answers PReF beats PAL", "auc", 10, "pref-active", "pal"),
    _new_user_claim(
        "Best-of-N by the new user's PReF reward beats one BT model's (win rate vs default, 10 answers)",
        "win_rate",
        10,
        "pref-active",
        "btl",
    ),
    Claim(
        "PReF",
        "Best-of-N over generated samples by the new user's PReF reward (10 answers) beats one BT model's pick "
        "(paper: win rates vs the default answer, LLM judge; here: SmolLM2 samples vs a random one, style judge)",
        "above",
        tuple(
            Cell("05_pref_best_of_n", "attributes", "test_new_users", "generated", m, metric)
            for m, metric in (("pref-active", "win_rate@10"), ("single-bt", "win_rate"))
        ),
        (_pref("win_rate", "PReF (active)", 10), _pref("win_rate", "Single BT", 0)),
    ),
    Claim(
        "PReF",
        "PReF on PRISM personas beats one BT model",
        "above",
        offline_blocker="PRISM prompts with simulated personas (not on PyPI)",
    ),
    Claim(
        "PReF",
        "People prefer PReF-aligned GPT-4o answers to default ones",
        "above",
        offline_blocker="GPT-4o and a human study",
    ),
)
"""Every claim the overview checks, in the order of the papers (REFERENCE.md 2.2 and 3)."""


def read_tables(results_root: str | Path) -> dict[str, list[dict]]:
    """{notebook stem: its ``table.json`` rows} for every ``<results_root>/<stem>/table.json``."""
    return {path.parent.name: read_json(path) for path in sorted(Path(results_root).glob("*/table.json"))}


def find_cell(tables: dict[str, list[dict]], cell: Cell) -> dict | None:
    """The ``table.json`` row of ``cell``, or None when its notebook wrote no such row."""
    return find_row(tables.get(cell.notebook, []), cell.dataset, cell.split, cell.subset, cell.method, cell.metric)


def verdict(claim: Claim, rows: list[dict | None], tables: dict[str, list[dict]] | None = None) -> str:
    """The claim's verdict from its rows (`find_cell`, in the order of ``claim.cells``); ``tables`` (`read_tables`)
    holds the rows of its sanity bars (`Claim.requires`)."""
    if claim.offline_blocker:
        return "needs data or models not available offline"
    if any(row is None for row in rows):
        return "not tested at this scale"
    for bar in claim.requires:
        if tables is None:
            raise ValueError(f"claim {claim.claim!r}: its sanity bars need the tables")
        bar_verdict = verdict(bar, [find_cell(tables, cell) for cell in bar.cells], tables)
        if bar_verdict != "reproduced":
            return f"not reproduced (sanity bar: {bar.claim}: {bar_verdict})"
    first = rows[0]
    if claim.rule == "ceiling":
        return "reproduced" if first["mean"] >= CEILING else f"not reproduced (below {100 * CEILING:.0f}%)"
    if claim.rule == "chance":
        near = abs(first["mean"] - 0.5) <= CHANCE_BAND
        return "reproduced" if near else f"not reproduced (outside 50 +- {100 * CHANCE_BAND:.0f}%)"
    if claim.rule in ("wins", "gain"):
        level = 0.5 if claim.rule == "wins" else 0.0
        if first["ci_low"] > level:
            return "reproduced"
        below = first["ci_high"] < level
        return "not reproduced (reversed)" if below else "not reproduced (no difference at this power)"
    if claim.rule in ("above", "same"):
        second = rows[1]
        above, below = first["ci_low"] > second["ci_high"], first["ci_high"] < second["ci_low"]
        if claim.rule == "same":
            return "reproduced" if not (above or below) else f"not reproduced ({'above' if above else 'below'})"
        if above:
            return "reproduced"
        return "not reproduced (reversed)" if below else "not reproduced (no difference at this power)"
    raise ValueError(f"claim {claim.claim!r}: unknown rule {claim.rule!r}")


def overview_rows(tables: dict[str, list[dict]]) -> list[dict]:
    """One row per claim: paper, claim, reported, ours (mean [95% interval], %), n and seeds, verdict, page."""
    out = []
    for claim in CLAIMS:
        rows = [find_cell(tables, cell) for cell in claim.cells]
        reported = [f"{100 * value:.1f}" if value is not None else "-" for value in claim.reported]
        ours = [format_interval(row) if row else "-" for row in rows]
        sizes = sorted({f"n={row['n']}, {len(row['seeds'])} seeds" for row in rows if row})
        out.append(
            {
                "paper": claim.paper,
                "claim": claim.claim,
                "reported (%)": " vs ".join(reported) if reported else "-",
                "ours (%)": " vs ".join(ours) if ours else "-",
                "test items": "; ".join(sizes) or "-",
                "verdict": verdict(claim, rows, tables),
                "page": claim.cells[0].notebook if claim.cells else "",
                "blocker": claim.offline_blocker,
            }
        )
    return out


def notebook_durations(book_notebooks: str | Path) -> list[dict]:
    """One row per executed notebook in ``book_notebooks`` that papermill timed: its stem, its minutes
    (``metadata.papermill.duration``), and, from the run's provenance (``metadata.plus``, `plus.book`), the
    machine it ran on, the commit and when; notebooks without papermill's record are left out. The profile is
    papermill's ``profile`` parameter."""
    rows = []
    for path in sorted(Path(book_notebooks).glob("[0-9]*.ipynb")):
        metadata = read_json(path).get("metadata", {})
        seconds = metadata.get("papermill", {}).get("duration")
        if seconds is None:
            continue
        record = metadata.get("plus", {})
        papermill = metadata["papermill"]
        rows.append(
            {
                "notebook": path.stem,
                "profile": papermill.get("parameters", {}).get("profile", ""),
                "minutes": round(float(seconds) / 60, 1),
                "machine": record.get("machine", "not recorded"),
                "commit": record["commit"][:10] if record.get("commit") else "not recorded",
                "executed": started_at(papermill),
            }
        )
    return rows
