import json
import random
import statistics
from dataclasses import replace

import pytest
import torch
from table_rows import table_row
from toy_users import mirrored_test_records

from plus.artifacts import read_json, write_table
from plus.baselines import BaselineConfig, RewardMethod
from plus.evaluation import (
    MAJORITY,
    PAPER_COLUMNS,
    REPORTED_PLUS_TABLE,
    aggregate_over_seeds,
    benchmark_config,
    bootstrap_interval,
    evaluate_method,
    interval_table,
    majority_accuracy,
    pairwise_accuracy,
    run_benchmark,
    run_fingerprint,
    sanity_bars,
    table_rows,
)


class LookupMethod(RewardMethod):
    """Rewards from a table: {(user, response): reward}; unknown pairs score 0."""

    name = "btl"

    def __init__(self, table: dict[tuple[str, str], float]) -> None:
        super().__init__(BaselineConfig(method="btl"))
        self.table = table
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def rewards(self, records, prompts, responses):
        return torch.tensor([self.table.get((r["user_id"], y), 0.0) for r, y in zip(records, responses, strict=True)])


def test_pairwise_accuracy_matches_a_naive_count():
    records = mirrored_test_records()
    table = {("dog-lover", r["eval_chosen"]): 1.0 for r in records[:4]}  # right on some, ties elsewhere
    result = pairwise_accuracy(LookupMethod(table), records)
    scores = [
        (table.get((r["user_id"], r["eval_chosen"]), 0.0), table.get((r["user_id"], r["eval_rejected"]), 0.0))
        for r in records
    ]
    naive = [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in scores]
    assert result["outcomes"] == naive
    assert result["accuracy"] == pytest.approx(sum(naive) / len(naive))
    contested = [ok for ok, r in zip(naive, records, strict=True) if r["contested"]]
    assert result["contested_accuracy"] == pytest.approx(sum(contested) / len(contested))
    assert result["num_pairs"] == len(records) and result["num_contested"] == len(contested)


def test_ties_count_as_half_and_a_perfect_model_scores_one():
    records = mirrored_test_records()
    assert pairwise_accuracy(LookupMethod({}), records)["accuracy"] == 0.5
    perfect = {(r["user_id"], r["eval_chosen"]): 1.0 for r in records}
    assert pairwise_accuracy(LookupMethod(perfect), records)["accuracy"] == 1.0


def test_evaluate_method_reports_each_present_split():
    records = mirrored_test_records()
    records = records + [{**r, "split": "test_ood"} for r in records[:3]]
    result = evaluate_method(LookupMethod({}), records)
    assert sorted(result) == ["test", "test_ood"]
    assert result["test_ood"]["num_pairs"] == 3


def test_aggregate_over_seeds_gives_mean_and_sample_std():
    per_seed = [{"test": {"accuracy": a, "contested_accuracy": None}} for a in (0.5, 0.7, 0.9)]
    out = aggregate_over_seeds(per_seed)
    assert out["test"]["accuracy"]["mean"] == pytest.approx(0.7)
    assert out["test"]["accuracy"]["std"] == pytest.approx(statistics.stdev([0.5, 0.7, 0.9]))
    assert "contested_accuracy" not in out["test"]
    assert aggregate_over_seeds(per_seed[:1])["test"]["accuracy"]["std"] == 0.0


def test_reported_table_is_the_papers_quotation():
    assert REPORTED_PLUS_TABLE["BTL"]["Pets"] == 44.15
    assert REPORTED_PLUS_TABLE["PLUS"]["UF-P-2"] == 69.40
    assert set(PAPER_COLUMNS) <= set(REPORTED_PLUS_TABLE["BTL"])


@pytest.mark.slow
def test_run_benchmark_writes_one_json_artifact_at_smoke(tmp_path):
    config = benchmark_config("smoke", datasets=("pets-ood",), methods=("btl", "pal", "plus-untrained"), num_train=8)
    config = replace(config, num_test=4, embedding_train=replace(config.embedding_train, num_epochs=2))
    results = run_benchmark(config, tmp_path)
    assert read_json(tmp_path / "results.json")["aggregate"] == json.loads(json.dumps(results["aggregate"]))
    seeds = results["runs"]["pets-ood"]["btl"]
    assert len(seeds) == len(config.seeds) and {"test", "test_ood"} <= set(seeds[0])
    assert (tmp_path / "summaries.jsonl").exists()
    assert (tmp_path / "runs" / "pets-ood" / "pal" / "seed0" / "metrics.jsonl").exists()
    rows = read_json(tmp_path / "table.json")
    table = interval_table(rows, "all")
    assert list(table.index) == ["BTL", "PAL", "PLUS-untrained", "User-blind ceiling"]
    ours = table.loc["BTL", ("Pets", "ours")]
    assert ours.startswith(f"{100 * results['aggregate']['pets-ood']['btl']['test']['accuracy']['mean']:.1f} [")
    assert interval_table(rows, "contested").loc["BTL", ("Pets", "reported")] == "44.1"
    again = run_benchmark(config, tmp_path)  # every run is read back from its result.json, not retrained
    assert again["num_cached_runs"] == 3 * len(config.seeds) and again["aggregate"] == results["aggregate"]


def test_run_benchmark_keeps_the_ceiling_of_a_data_set_whose_runs_are_all_skipped(tmp_path):
    config = benchmark_config("smoke", datasets=("pets-ood", "uf-p-4-synthetic"), methods=("pal",), num_train=8)
    config = replace(config, num_test=4, skip=("uf-p-4-synthetic:pal",))
    config = replace(config, embedding_train=replace(config.embedding_train, num_epochs=1))
    results = run_benchmark(config, tmp_path)
    assert set(results["aggregate"]["uf-p-4-synthetic"]) == {MAJORITY}
    assert "uf-p-4-synthetic" not in results["runs"]


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_pairs():
    rng = random.Random(0)
    small = [[float(rng.random() < 0.7) for _ in range(50)] for _ in range(3)]
    large = [[float(rng.random() < 0.7) for _ in range(2000)] for _ in range(3)]
    for table in (small, large):
        low, high = bootstrap_interval(table)
        assert low < statistics.fmean(x for row in table for x in row) < high
    assert (
        bootstrap_interval(large)[1] - bootstrap_interval(large)[0]
        < bootstrap_interval(small)[1] - bootstrap_interval(small)[0]
    )
    assert bootstrap_interval([[1.0] * 10] * 3) == (1.0, 1.0)
    with pytest.raises(ValueError, match="seeds, pairs"):
        bootstrap_interval([])
    ragged = [[float(rng.random() < 0.7) for _ in range(n)] for n in (40, 55, 47)]  # other items per seed
    low, high = bootstrap_interval(ragged)
    assert low < statistics.fmean(x for row in ragged for x in row) < high and high - low < 0.3


def test_table_rows_follow_the_results_format_and_bad_rows_are_refused(tmp_path):
    per_seed = [{"test": pairwise_accuracy(LookupMethod({}), mirrored_test_records())} for _ in range(2)]
    results = {"config": {"seeds": [0, 1]}, "aggregate": {"pets-ood": {"btl": aggregate_over_seeds(per_seed)}}}
    rows = table_rows(results)
    assert {row["subset"] for row in rows} == {"all", "contested", "agreed"}
    contested = next(row for row in rows if row["subset"] == "contested")
    assert contested["reported"] == pytest.approx(0.4415) and contested["mean"] == 0.5
    assert all(row["reported"] is None for row in rows if row["subset"] != "contested")
    path = write_table(tmp_path / "table.json", rows)
    assert read_json(path) == rows
    with pytest.raises(ValueError, match="row 0"):
        write_table(tmp_path / "bad.json", [{**rows[0], "ci_low": 0.9}])
    with pytest.raises(ValueError, match="row 0 has keys"):
        write_table(tmp_path / "bad.json", [{"dataset": "pets"}])


def test_the_user_blind_ceiling_is_chance_where_users_split_evenly_and_higher_where_most_agree():
    from plus.data import build_dataset

    pets = build_dataset("pets-ood", 0, num_train=8, num_test=60)
    ceiling = majority_accuracy(pets, ("test", "test_ood"))
    assert ceiling["test"]["contested_accuracy"] == 0.5 and ceiling["test"]["agreed_accuracy"] == 1.0
    uf4 = build_dataset("uf-p-4-synthetic", 0, num_train=8, num_test=200)
    assert majority_accuracy(uf4, ("test",))["test"]["contested_accuracy"] > 0.55  # 3 of 4 users often agree
    uf2 = build_dataset("uf-p-2-synthetic", 0, num_train=8, num_test=60)
    assert majority_accuracy(uf2, ("test",))["test"]["contested_accuracy"] == 0.5  # two users: 1 vs 1
    real = [{k: v for k, v in r.items() if k != "majority_credit"} for r in pets]
    assert majority_accuracy(real, ("test",)) == {}  # no ground truth, no ceiling
    rows = table_rows(
        {
            "config": {"seeds": [0, 1, 2], "data_seed": 0},
            "aggregate": {"pets-ood": {MAJORITY: aggregate_over_seeds([ceiling])}},
        }
    )
    assert {row["method"] for row in rows} == {MAJORITY} and all(row["seeds"] == [0] for row in rows)
    assert interval_table(rows, "contested").index.tolist() == ["User-blind ceiling"]


def test_sanity_bars_hold_fail_or_cannot_be_checked_from_table_rows():
    pets = ("pets-ood", "test")
    rows = [
        table_row(*pets, "all", "oracle", 0.97),
        table_row(*pets, "all", "btl", 0.73),
        table_row(*pets, "contested", "btl", 0.50),
        table_row(*pets, "contested", "oracle", 0.95),
        table_row(*pets, "contested", "icl", 0.60),  # above BTL, but not by FAR_ABOVE
        table_row("uf-p-4-synthetic", "test", "all", "oracle", 0.60),
        table_row("uf-p-4-synthetic", "test", "all", "btl", 0.59),  # overlapping intervals
        table_row("uf-p-4-synthetic", "test", "contested", "btl", 0.40),
        table_row("pets-ood", "test_ood", "contested", "btl", 0.62),
        table_row("pets-ood", "test_ood", "contested", MAJORITY, 0.65),  # most training users agree there
    ]
    bars = sanity_bars(rows).set_index(["bar", "column"])["holds"]
    assert bars[("Oracle >= 95%", "Pets")] is True
    assert bars[("Oracle clearly above BTL", "Pets")] is True
    assert bars[("Oracle clearly above BTL", "UF-P-4")] is False
    assert bars[("Oracle clearly above BTL", "UF-P-2")] is None  # not run
    assert bars[("BTL at the user-blind ceiling on contested", "Pets")] is True  # no ceiling row: chance
    assert bars[("BTL at the user-blind ceiling on contested", "UF-P-4")] is False
    assert bars[("BTL at the user-blind ceiling on contested", "Pets-OOD")] is True  # 62% is 3 points from 65%
    assert bars[("Oracle far above BTL on contested", "Pets")] is True
    assert bars[("ICL far above BTL on contested", "Pets")] is False
    assert (
        sanity_bars([table_row(*pets, "all", "oracle", 0.90)]).set_index("bar").loc["Oracle >= 95%", "holds"] is False
    )


def test_skipped_runs_must_lie_in_the_product_and_do_not_change_fingerprints():
    config = benchmark_config("smoke", datasets=("pets-ood",), methods=("btl", "icl"))
    skipping = replace(config, skip=("pets-ood:icl",))
    assert run_fingerprint(config, "pets-ood", "btl", 0) == run_fingerprint(skipping, "pets-ood", "btl", 0)
    with pytest.raises(ValueError, match="outside the product"):
        replace(config, skip=("uf-p-4-synthetic:icl",))
    assert "uf-p-4-synthetic:icl" in benchmark_config("cpu").skip
    assert benchmark_config("cpu", methods=("btl", "oracle")).skip == ()  # the profile's skips outside the choice
