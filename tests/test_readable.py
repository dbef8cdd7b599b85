import pytest
from toy_users import KeywordRewardModel

from plus.artifacts import write_table
from plus.data.pets import contested_animals
from plus.data.registry import build_dataset
from plus.readable import (
    ReadableConfig,
    faithfulness,
    faithfulness_cells,
    gallery,
    readable_bars,
    readable_config,
    readable_note,
    readable_rows,
    reword,
    run_editing,
    source_summaries,
    swap,
)


@pytest.fixture(scope="module")
def records():
    built = build_dataset("pets-ood", seed=0, num_train=4, num_test=16)
    return [r for r in built if r["split"] != "train"]


def _named(records, which):
    """A summary per record naming the user's own (0) or other (1) contested animal, in a summarizer's words."""
    return [f"This user prefers responses about {contested_animals(r['ground_truth']['profile'])[which]}s."
            for r in records]  # fmt: skip


def test_faithfulness_reads_which_contested_animal_a_summary_names(records):
    record = records[0]
    own, other = contested_animals(record["ground_truth"]["profile"])
    assert faithfulness(f"Loves {own}s.", record) == "own"
    assert faithfulness(f"Loves {other}s.", record) == "other"
    assert faithfulness(f"{own}s and {other}s.", record) == "both"
    assert faithfulness("Likes short answers.", record) == faithfulness("", record) == "neither"
    with pytest.raises(TypeError, match="the summary of record .* must be text"):
        faithfulness(None, record)
    with pytest.raises(ValueError, match="has no ground_truth.profile"):
        faithfulness("Dogs.", {**record, "ground_truth": {}})


def test_edits_swap_the_fact_or_reword_around_it_for_one_animal_summaries(records):
    record = records[0]
    own, other = contested_animals(record["ground_truth"]["profile"])
    summary = f"This user prefers responses about {own}s."
    assert swap(summary, record) == f"This user prefers responses about {other}s."
    assert reword(summary, record) == f"This user likes answers about {own}s."
    for unedited in (f"{own}s and {other}s.", "No animal at all."):  # no single fact to edit
        assert swap(unedited, record) is None and reword(unedited, record) is None
    assert reword(f"Loves {own}s.", record) is None  # nothing to reword


def test_faithfulness_cells_and_the_paired_difference(records):
    summaries = source_summaries(records, {"plus": _named(records, 0), "plus-untrained": _named(records, 1)})
    assert list(summaries) == ["ideal-summary", "plus-untrained", "plus"]
    faith = faithfulness_cells(records, summaries, ("test", "test_ood"))
    for split in ("test", "test_ood"):
        assert faith["cells"]["ideal-summary"][split]["own"]["mean"] == 1.0
        assert faith["cells"]["plus"][split]["own"]["mean"] == 1.0
        assert faith["cells"]["plus-untrained"][split]["other"]["mean"] == 1.0
        assert faith["differences"]["plus - plus-untrained"][split]["mean"] == 1.0
    with pytest.raises(ValueError, match="plus: record 2 .* has no summary"):
        source_summaries(records, {"plus": ["Dogs."] * 2 + [None] + ["Cats."] * (len(records) - 3)})
    empty = source_summaries(records, {"plus": [""] * len(records)})  # a summarizer may write nothing
    assert faithfulness_cells(records, empty, ("test",))["cells"]["plus"]["test"]["empty"] == 16
    with pytest.raises(ValueError, match="plus-untrained: 1 summaries for"):
        source_summaries(records, {"plus-untrained": ["Dogs."]})
    with pytest.raises(ValueError, match="no held-out record of split 'valid'"):
        faithfulness_cells(records, summaries, ("valid",))


def test_the_edit_flips_a_reader_not_a_model_that_ignores_the_summary_and_resumes(records, tmp_path):
    config = ReadableConfig(seeds=(0, 1), splits=("test",))
    summaries = source_summaries(records, {"plus": _named(records, 1)})
    built = []

    def reader(seed):
        built.append(seed)
        return KeywordRewardModel(reads=True)

    editing = run_editing(config, records, summaries, reader, tmp_path)
    ideal = editing["cells"]["ideal-summary"]
    contested = sum(1 for r in records if r["split"] == "test" and r["contested"])
    assert ideal["swap"]["test"]["n"] == contested
    assert ideal["swap"]["test"]["follows"]["mean"] == 1.0 and ideal["reword"]["test"]["follows"]["mean"] == 0.0
    assert ideal["swap"]["test"]["accuracy_before"]["mean"] == 1.0
    assert editing["cells"]["plus"]["swap"]["test"]["accuracy_after"]["mean"] == 1.0  # the wrong fact, swapped
    again = run_editing(config, records, summaries, reader, tmp_path)  # read back: nothing rebuilt
    assert built == [0, 1] and again["cells"] == editing["cells"]
    blind = run_editing(config, records, summaries, lambda seed: KeywordRewardModel(reads=False), tmp_path / "b")
    assert blind["cells"]["ideal-summary"]["swap"]["test"]["follows"]["mean"] == 0.0
    assert (tmp_path / "edits.json").exists()
    run_editing(ReadableConfig(seeds=(0,), splits=("test",)), records, summaries, reader, tmp_path)
    assert (tmp_path / "edits.json.stale").exists()  # another config's margins are set aside

    faith = faithfulness_cells(records, summaries, ("test",))
    bars = readable_bars(faith, editing)
    assert [b["holds"] for b in bars] == [True, True, True, True]
    assert not readable_bars(faith, blind)[2]["holds"]
    note = readable_note(faith, editing)
    assert "4 of 4 hold" in note and "PLUS summaries, test: 0.0 [0.0, 0.0]% name only" in note
    assert "names one animal of the pair) holds here" in note
    rows = readable_rows(config, faith, editing)
    write_table(tmp_path / "table.json", rows)  # the RESULTS.md format, checked on write
    assert {r["metric"] for r in rows} >= {"faithfulness/own", "edit_follows/swap", "edit_accuracy_before/reword"}
    shown = gallery(records, summaries, ReadableConfig(splits=("test",), gallery_size=2))
    assert [(row["summarizer"], row["names"]) for row in shown] == [("Ideal one-fact", "own"), ("PLUS", "other")] * 2


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="ReadableConfig.epochs must be a positive integer"):
        ReadableConfig(epochs=0)
    with pytest.raises(ValueError, match="at least one seed"):
        ReadableConfig(seeds=())
    assert readable_config("smoke").seeds == (0,) and readable_config("cpu").seeds == (0, 1, 2)


def test_style_faithfulness_reads_which_pole_of_a_style_user_a_summary_names():
    from plus.readable import style_faithfulness

    record = {"user_id": "verbose", "ground_truth": {"poles": ["verbose"]}}
    cases = {"Give this user detailed answers.": "own", "They want it brief.": "other",
             "Long, but not long-winded: short.": "both", "Dogs are great.": "neither", "": "neither"}  # fmt: skip
    for summary, expected in cases.items():
        assert style_faithfulness(summary, record) == expected, summary
    assert style_faithfulness("No detail, please.", record) == "other"
    with pytest.raises(ValueError, match="record 'u1' has no ground_truth.poles"):
        style_faithfulness("Detailed.", {"user_id": "u1", "ground_truth": {"profile": {}}})
    with pytest.raises(TypeError, match="summary of record 'verbose' must be text"):
        style_faithfulness(None, record)


def test_the_style_edit_swaps_the_pole_and_a_reader_follows_it_but_not_the_control(tmp_path):
    from toy_users import StyleKeywordRewardModel

    from plus.readable import STYLE_EDITS, reword_style, swap_style

    built = build_dataset("uf-p-4-synthetic", seed=0, num_train=8, num_test=24)
    held = [r for r in built if r["split"] == "test"]
    verbose = next(r for r in held if r["user_id"] == "verbose")
    assert swap_style("This user prefers long, detailed answers.", verbose) == (
        "This user prefers short, to-the-point answers."
    )
    assert (
        reword_style("This user prefers long, detailed answers.", verbose) == "This user likes long, detailed answers."
    )
    assert swap_style("Hello there.", verbose) is None and swap_style("Long or short.", verbose) is None
    config = ReadableConfig(dataset="uf-p-4-synthetic", seeds=(0,), splits=("test",))
    summaries = {"oracle": [r["ground_truth"]["description"] for r in held]}

    def reader(seed):
        return StyleKeywordRewardModel(reads=True)

    editing = run_editing(config, held, summaries, reader, tmp_path, edits=STYLE_EDITS)
    cell = editing["cells"]["oracle"]
    assert cell["swap"]["test"]["n"] == len(held)  # every UF-P pair is contested
    assert cell["swap"]["test"]["follows"]["mean"] > 0.5 and cell["reword"]["test"]["follows"]["mean"] == 0.0
    blind = run_editing(config, held, summaries, lambda seed: StyleKeywordRewardModel(reads=False), tmp_path / "b",
                        edits=STYLE_EDITS)  # fmt: skip
    assert blind["cells"]["oracle"]["swap"]["test"]["follows"]["mean"] == 0.0
