"""PReF's table.json rows: one per method, metric and number of answers, NaN values left out."""

import math

import pytest

from plus.artifacts import write_table
from plus.factorization.experiment import pref_table_rows


def _result():
    rows = []
    for seed in (0, 1):
        for user in ("a", "b", "c"):
            for method, auc in (("PReF (active)", 0.8), ("Single BT", 0.5)):
                for k in (0, 10):
                    value = float("nan") if (user, k, method) == ("a", 0, "Single BT") else auc + 0.01 * seed
                    rows.append(
                        {
                            "method": method,
                            "num_answers": k,
                            "seed": seed,
                            "user_id": user,
                            "auc": value,
                            "win_rate": 0.6,
                            "accuracy": 0.7,
                        }
                    )
    return {"rows": rows, "config": {"answer_counts": [0, 10]}}


def test_pref_table_rows_are_valid_table_rows_with_the_reported_values(tmp_path):
    rows = pref_table_rows(_result())
    write_table(tmp_path / "table.json", rows)  # validates every row (finite mean inside its interval)
    cell = {(r["method"], r["metric"]): r for r in rows}
    assert (
        cell[("pref-active", "auc@10")]["mean"] == pytest.approx(0.805)
        and cell[("pref-active", "auc@10")]["reported"] == 0.83
    )
    assert cell[("btl", "auc@0")]["mean"] == pytest.approx(0.505)  # user a's NaN in both seeds left out
    assert not any(math.isnan(r["mean"]) for r in rows)
    assert {r["n"] for r in rows} <= {2, 3} and all(r["seeds"] == [0, 1] for r in rows)
