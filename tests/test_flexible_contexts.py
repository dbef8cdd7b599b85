"""The flexible-context experiment: its config, the pairing of kinds, the paired differences, bars and verdict."""

import pytest

from plus.data import build_dataset
from plus.evaluation import MAJORITY, table_rows
from plus.flexible_contexts import (
    CONTEXT_KINDS,
    READERS,
    REFERENCES,
    SPLIT,
    ceiling_credits,
    comparison_rows,
    comparisons,
    faithfulness_note,
    faithfulness_rows,
    faithfulness_table,
    flexible_bars,
    flexible_config,
    flexible_note,
    kind_table,
    paired_difference,
    summary_faithfulness,
)

LABELS = {"btl": "BTL", "oracle": "Oracle", "icl": "ICL", "plus-untrained": "PLUS-untrained", MAJORITY: "ceiling"}


def test_config_runs_the_references_once_and_every_reader_on_every_kind():
    for profile in ("cpu", "gpu"):
        config = flexible_config(profile)
        assert config.datasets == tuple(CONTEXT_KINDS.values()) and config.splits == (SPLIT,)
        run = config.grid - set(config.skip)
        for dataset in config.datasets:
            assert {f"{dataset}:{reader}" for reader in READERS} <= run
            for reference in REFERENCES:
                assert (f"{dataset}:{reference}" in run) == (dataset == CONTEXT_KINDS["labelled pairs"])
    cpu = flexible_config("cpu")
    assert (cpu.num_train, cpu.num_test, len(cpu.seeds)) == (256, 200, 3)


def test_the_kinds_share_their_test_pairs_in_order():
    """What `paired_difference` relies on: the same records, pairs and labels; only the context differs."""
    sets = [build_dataset(name, 0, num_train=16, num_test=12) for name in CONTEXT_KINDS.values()]
    keys = ("split", "user_id", "eval_prompt", "eval_chosen", "eval_rejected", "contested")
    first = [tuple(r[k] for k in keys) for r in sets[0]]
    for other in sets[1:]:
        assert [tuple(r[k] for k in keys) for r in other] == first
    assert len({r["context"] for r in sets[1] + sets[2]} & {r["context"] for r in sets[0]}) == 0


def run(credits_per_seed: list[list[float]]) -> list[dict]:
    """A `run_benchmark` per-seed result list whose `SPLIT` credits are ``credits_per_seed`` (all contested)."""
    out = []
    for credits in credits_per_seed:
        mean = sum(credits) / len(credits)
        metrics = {"accuracy": mean, "contested_accuracy": mean, "agreed_accuracy": None, "num_pairs": len(credits)}
        metrics |= {"num_contested": len(credits), "outcomes": credits, "contested_outcomes": credits}
        out.append({SPLIT: metrics | {"agreed_outcomes": []}, "train": {"run_seconds": 1.0}})
    return out


def fake_results(cells: dict[tuple[str, str], list[list[float]]]) -> dict:
    """A `run_benchmark` artifact with the given (data set, method) cells (aggregated like the real one)."""
    from plus.evaluation import aggregate_over_seeds

    results = {"config": {"seeds": [0, 1, 2], "data_seed": 0}, "runs": {}, "aggregate": {}}
    for (dataset, method), credits in cells.items():
        per_seed = run(credits)
        results["runs"].setdefault(dataset, {})[method] = per_seed
        results["aggregate"].setdefault(dataset, {})[method] = aggregate_over_seeds(
            [{k: v for k, v in m.items() if k != "train"} for m in per_seed]
        )
    return results


LABELLED, CONVERSATIONS, GUIDE = CONTEXT_KINDS.values()
N = 40
RIGHT, WRONG, HALF = [[1.0] * N] * 3, [[0.0] * N] * 3, [[1.0, 0.0] * (N // 2)] * 3


def test_paired_difference_pairs_seeds_and_pairs():
    results = fake_results({(GUIDE, "plus-untrained"): RIGHT, (GUIDE, "icl"): HALF})
    cell = paired_difference(results, (GUIDE, "plus-untrained"), (GUIDE, "icl"))
    assert cell["mean"] == pytest.approx(0.5) and cell["n"] == N
    assert cell["ci_low"] <= 0.5 <= cell["ci_high"] and cell["ci_low"] > 0
    assert paired_difference(results, (GUIDE, "plus-untrained"), (CONVERSATIONS, "icl")) is None
    same = paired_difference(results, (GUIDE, "icl"), (GUIDE, "icl"))
    assert (same["mean"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)


def test_paired_difference_refuses_cells_that_do_not_share_pairs():
    results = fake_results({(GUIDE, "icl"): HALF, (LABELLED, "icl"): [[1.0] * (N - 2)] * 3})
    with pytest.raises(ValueError, match="do not share their seeds and test pairs"):
        paired_difference(results, (GUIDE, "icl"), (LABELLED, "icl"))


def full_results(plus_on_flexible: list[list[float]]) -> dict:
    cells = {(LABELLED, "btl"): HALF, (LABELLED, "oracle"): RIGHT}
    for dataset in CONTEXT_KINDS.values():
        cells[(dataset, "icl")] = HALF
        cells[(dataset, "plus-untrained")] = HALF if dataset == LABELLED else plus_on_flexible
    return fake_results(cells)


def test_comparisons_ask_each_question_once_and_rows_follow_the_table_format():
    results = full_results(RIGHT)
    asked = {(c["kind"], c["method"], c["minus"]) for c in comparisons(results)}
    assert len(asked) == len(comparisons(results)) == 3 * 3 + 2 * 2  # per kind: P-U - ICL, 2 x - BTL; flexible: 2
    assert ("user guide", "plus-untrained", "icl") in asked
    assert ("labelled pairs", "icl", "labelled-pairs") not in asked
    rows = comparison_rows(results)
    guide = next(r for r in rows if r["dataset"] == GUIDE and r["metric"] == "accuracy_minus/icl")
    assert guide["mean"] == pytest.approx(0.5) and guide["seeds"] == [0, 1, 2] and guide["reported"] is None
    del results["runs"][CONVERSATIONS]["plus-untrained"]
    assert not any(c["dataset"] == CONVERSATIONS and c["method"] == "plus-untrained" for c in comparisons(results))


def test_bars_hold_fail_or_read_not_run():
    rows = table_rows(full_results(RIGHT))
    assert [b["holds"] for b in flexible_bars(rows)] == [True, True]  # Oracle 100 vs BTL 50; BTL at 50 (no ceiling)
    rows_btl_high = table_rows(fake_results({(LABELLED, "btl"): RIGHT, (LABELLED, "oracle"): RIGHT}))
    assert [b["holds"] for b in flexible_bars(rows_btl_high)] == [False, False]
    assert [b["holds"] for b in flexible_bars(table_rows(fake_results({(GUIDE, "icl"): HALF})))] == [None, None]


def test_note_says_whether_the_papers_claim_holds():
    results = full_results(RIGHT)
    note = flexible_note(results, table_rows(results) + comparison_rows(results), LABELS)
    assert "Sanity bars: 2 of 2 hold." in note and "that claim holds here for PLUS-untrained" in note
    assert "above ICL on conversations and user guide." in note
    results = full_results(HALF)
    note = flexible_note(results, table_rows(results), LABELS)
    assert "does not hold here" in note and "user guide: no different from ICL" in note
    results = fake_results({(LABELLED, "btl"): HALF, (LABELLED, "oracle"): RIGHT, (LABELLED, "icl"): HALF})
    note = flexible_note(results, table_rows(results), LABELS)
    assert "is not tested here" in note and "PLUS-untrained not run at this profile" in note


def test_kind_table_puts_the_reported_numbers_beside_the_labelled_pairs_only():
    results = full_results(WRONG)
    table = kind_table(table_rows(results), LABELS)
    assert table.loc["PLUS-untrained", "user guide"].startswith("0.0 [0.0, 0.0]")
    assert table.loc["ICL", "reported, labelled pairs"] == "57.2"  # REPORTED_PLUS_TABLE's UF-P-4, the paper's
    assert table.loc["BTL", "conversations"] == ""


def test_the_user_blind_ceiling_is_compared_pair_by_pair():
    results = full_results(RIGHT)
    ceiling = [1.0, 0.0] * (N // 2)  # the majority is right on half the pairs, as HALF
    found = {(c["kind"], c["method"], c["minus"]): c for c in comparisons(results, ceiling)}
    assert len(found) == len(comparisons(results)) + 3 * 2  # each reader on each kind, minus the ceiling
    assert found[("user guide", "plus-untrained", MAJORITY)]["mean"] == pytest.approx(0.5)
    same = found[("user guide", "icl", MAJORITY)]  # ICL's credits are the ceiling's, pair by pair
    assert (same["mean"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)
    note = flexible_note(results, table_rows(results), LABELS, ceiling)
    assert "vs the user-blind ceiling +50.0" in note
    assert "user-blind ceiling" not in flexible_note(results, table_rows(results), LABELS).split("hold.")[1]


def test_ceiling_credits_are_the_majority_vote_of_the_contested_test_pairs():
    config = flexible_config("smoke", num_train=16, num_test=12)
    credits = ceiling_credits(config)
    records = build_dataset(CONTEXT_KINDS["labelled pairs"], 0, num_train=16, num_test=12)
    test = [r for r in records if r["split"] == SPLIT and r["contested"]]
    assert credits == [r["majority_credit"] for r in test] and len(credits) == 12


def test_note_says_what_a_failed_bar_means():
    results = fake_results({(LABELLED, "btl"): RIGHT, (LABELLED, "oracle"): RIGHT, (GUIDE, "icl"): RIGHT})
    note = flexible_note(results, table_rows(results), LABELS)
    assert "Sanity bars: 0 of 2 hold." in note
    assert "does not read even a true statement" in note and "overstates what a reader learns" in note


def _plant_summaries(config, directory) -> dict[str, int]:
    """Write PLUS-untrained summaries of every kind's `SPLIT` contexts into ``directory/summaries.jsonl`` (nothing
    is generated): the first context's names the user's own pole, the second's the opposite, the rest nothing.
    Returns the number of distinct contexts per kind."""
    import json

    from plus.baselines import summary_key
    from plus.data.attributes import opposite_pole
    from plus.summarizer import SUMMARIZER_INSTRUCTION

    instruction = SUMMARIZER_INSTRUCTION + f" [prefill marker, {config.max_summary_tokens} tokens]"
    counts, lines = {}, []
    for kind, dataset in CONTEXT_KINDS.items():
        built = build_dataset(dataset, config.data_seed, num_train=config.num_train, num_test=config.num_test)
        held = {r["context"]: r for r in built if r["split"] == SPLIT}
        for i, (context, record) in enumerate(held.items()):
            pole = record["ground_truth"]["poles"][0]
            summary = {0: f"The user likes {pole} answers.", 1: f"The user likes {opposite_pole(pole)} answers."}
            key = summary_key(config.summarizer_model, instruction, context)
            text = summary.get(i, "Hello there.")
            lines.append(json.dumps({"key": key, "model": config.summarizer_model, "summary": text}))
        counts[kind] = len(held)
    (directory / "summaries.jsonl").write_text("\n".join(lines) + "\n")
    return counts


def test_summary_faithfulness_reads_each_distinct_context_once_from_the_cache(tmp_path):
    config = flexible_config("smoke", num_train=16, num_test=12)
    expected = _plant_summaries(config, tmp_path)
    faith = summary_faithfulness(config, str(tmp_path))
    assert set(faith) == set(CONTEXT_KINDS)
    for kind, n in expected.items():
        cell = faith[kind]["plus-untrained"]
        assert cell["n"] == n and cell["own"]["mean"] == pytest.approx(1 / n)
        assert cell["other"]["mean"] == pytest.approx(1 / n) and cell["neither"]["mean"] == pytest.approx(1 - 2 / n)
        assert faith[kind]["oracle"]["own"]["mean"] == 1.0
    rows = faithfulness_rows(faith, config)
    assert len(rows) == len(CONTEXT_KINDS) * 2 * 4 and {r["metric"] for r in rows} >= {"faithfulness/own"}
    note = faithfulness_note(faith)
    assert note.startswith("Sanity bar: the word list reads every true description") and "no more often" in note
    assert faithfulness_table(faith).shape == (len(CONTEXT_KINDS) * 2, 5)


def test_style_editing_edits_the_true_descriptions_and_the_summaries_that_name_one_side(tmp_path):
    from toy_users import StyleKeywordRewardModel

    from plus.artifacts import write_json
    from plus.flexible_contexts import (
        editing_note,
        editing_rows,
        editing_table,
        oracle_training_seconds,
        other_user_edit,
        style_editing,
    )

    config = flexible_config("smoke", num_train=16, num_test=12)
    _plant_summaries(config, tmp_path)
    editing = style_editing(config, str(tmp_path), lambda seed: StyleKeywordRewardModel(reads=True))
    cells = editing["cells"]
    assert cells["oracle"]["swap"][SPLIT]["n"] == 12 and cells["oracle"]["reword"][SPLIT]["follows"]["mean"] == 0.0
    assert cells["oracle"]["swap"][SPLIT]["follows"]["mean"] > 0.5
    other = cells["oracle"]["other-user"][SPLIT]  # another training user's, who ranks the pair the other way
    assert other["n"] >= 1 and other["follows"]["mean"] > 0.5 and "other-user" not in cells["user guide"]
    for kind in CONTEXT_KINDS:  # the planted summaries that name one side: the first two contexts' records
        assert 1 <= cells[kind]["swap"][SPLIT]["n"] <= 12 and "reword" not in cells[kind]  # no "prefers" in them
    rows = editing_rows(editing, config)
    methods = {(r["dataset"], r["method"]) for r in rows}
    assert {(CONTEXT_KINDS["labelled pairs"], "oracle"), (CONTEXT_KINDS["user guide"], "plus-untrained")} <= methods
    assert (tmp_path / "edits.json").exists()
    assert oracle_training_seconds(config, str(tmp_path)) is None  # the toy reader was never trained
    for seed in config.seeds:
        write_json(tmp_path / f"oracle-rm-seed-{seed}" / "train.json", {"seconds": 2.0, "steps": 1})
    assert oracle_training_seconds(config, str(tmp_path)) == 2.0 * len(config.seeds)
    assert editing_table(editing).shape[1] == 4
    edit = other_user_edit(config)
    record = build_dataset(CONTEXT_KINDS["labelled pairs"], 0, num_train=16, num_test=12)[-1]
    assert edit("Some other statement.", record) is None
    replaced = edit(record["ground_truth"]["description"], record)
    assert replaced is None or replaced != record["ground_truth"]["description"]
    note = editing_note(editing)
    assert "Sanity bars:" in note and "of the 12 contested pairs right" in note and "swapping the pole flips" in note
