"""The results overview: verdicts computed from table.json rows, never typed."""

import pytest
from table_rows import table_row

from plus.artifacts import write_table
from plus.overview import CLAIMS, Cell, Claim, notebook_durations, overview_rows, read_tables, verdict


def _row(cell: Cell, mean: float) -> dict:
    return table_row(cell.dataset, cell.split, cell.subset, cell.method, mean, metric=cell.metric)


A, B = (
    Cell("03_reward_models", "pets-ood", "test", "contested", "oracle"),
    Cell("03_reward_models", "pets-ood", "test", "contested", "btl"),
)


@pytest.mark.parametrize(
    ("rule", "means", "expected"),
    [
        ("above", (0.9, 0.5), "reproduced"),
        ("above", (0.51, 0.5), "not reproduced (no difference at this power)"),
        ("above", (0.4, 0.5), "not reproduced (reversed)"),
        ("same", (0.51, 0.5), "reproduced"),
        ("same", (0.6, 0.5), "not reproduced (above)"),
        ("chance", (0.53,), "reproduced"),
        ("chance", (0.40,), "not reproduced (outside 50 +- 5%)"),
        ("ceiling", (0.96,), "reproduced"),
        ("ceiling", (0.90,), "not reproduced (below 95%)"),
        ("wins", (0.6,), "reproduced"),
        ("wins", (0.51,), "not reproduced (no difference at this power)"),
        ("wins", (0.4,), "not reproduced (reversed)"),
        ("gain", (0.1,), "reproduced"),
        ("gain", (0.01,), "not reproduced (no difference at this power)"),
        ("gain", (-0.1,), "not reproduced (reversed)"),
    ],
)
def test_each_rule_gives_its_verdict(rule, means, expected):
    cells = (A, B)[: len(means)]
    claim = Claim("PLUS", "a claim", rule, cells)
    assert verdict(claim, [_row(c, m) for c, m in zip(cells, means, strict=True)]) == expected
    assert verdict(claim, [None] * len(cells)) == "not tested at this scale"
    assert verdict(Claim("PLUS", "x", rule, offline_blocker="PRISM"), []).startswith("needs data or models")


def test_a_failed_sanity_bar_overrules_the_comparison():
    bar = Claim("PLUS", "the true description wins", "wins", (B,))
    claim = Claim("PLUS", "summaries win", "wins", (A,), requires=(bar,))
    rows = [_row(A, 0.6)]
    assert verdict(claim, rows, {"03_reward_models": [_row(B, 0.6)]}) == "reproduced"
    failed = verdict(claim, rows, {"03_reward_models": [_row(B, 0.51)]})
    bar_failed = "not reproduced (no difference at this power)"
    assert failed == f"not reproduced (sanity bar: the true description wins: {bar_failed})"
    assert verdict(claim, rows, {}).startswith("not reproduced (sanity bar: the true description wins: not tested")
    with pytest.raises(ValueError, match="sanity bars need the tables"):
        verdict(claim, rows)


def test_overview_reads_every_table_and_covers_every_claim(tmp_path):
    write_table(tmp_path / "03_reward_models" / "table.json", [_row(A, 0.97), _row(B, 0.5)])
    rows = overview_rows(read_tables(tmp_path))
    assert len(rows) == len(CLAIMS)
    by_claim = {row["claim"]: row for row in rows}
    oracle = by_claim["The true user description (Oracle) puts the reward model at the ceiling on Pets"]
    assert oracle["verdict"] == "reproduced" and oracle["ours (%)"] == "97.0 [95.0, 99.0]"
    assert oracle["reported (%)"] == "100.0" and oracle["page"] == "03_reward_models"
    assert (
        by_claim["A user-blind BT model is at chance on the pairs Pets users disagree on"]["verdict"] == "reproduced"
    )
    assert (
        sum(row["verdict"] == "not tested at this scale" for row in rows)
        == sum(1 for claim in CLAIMS if not claim.offline_blocker) - 2
    )
    assert all(len(claim.reported) in (0, len(claim.cells)) or claim.offline_blocker for claim in CLAIMS)


def test_notebook_durations_are_read_from_papermill_metadata(tmp_path):
    import json

    papermill = {"duration": 750.0, "start_time": "2026-12-04T17:50:01.5", "parameters": {"profile": "cpu"}}
    record = {"machine": "Linux x86_64, 2 CPUs", "commit": "338694af30e1c2d"}
    (tmp_path / "01_a.ipynb").write_text(
        json.dumps({"metadata": {"papermill": papermill, "plus": record}, "cells": []})
    )
    (tmp_path / "02_b.ipynb").write_text(json.dumps({"metadata": {}, "cells": []}))  # never executed by papermill
    (tmp_path / "03_c.ipynb").write_text(json.dumps({"metadata": {"papermill": {"duration": 6.0}}, "cells": []}))
    assert notebook_durations(tmp_path) == [
        {"notebook": "01_a", "profile": "cpu", "minutes": 12.5, "machine": "Linux x86_64, 2 CPUs",
         "commit": "338694af30", "executed": "2026-12-04 17:50"},
        {"notebook": "03_c", "profile": "", "minutes": 0.1, "machine": "not recorded", "commit": "not recorded",
         "executed": ""},
    ]  # fmt: skip
