import math

import pytest

import plus.models
import plus.personalize as personalize
from plus.artifacts import write_table
from plus.data.pets import contested_animals
from plus.data.registry import build_dataset
from plus.personalize import (
    STYLE_DATASET,
    PersonalizeConfig,
    condition_summaries,
    loop_summaries,
    personalization_bars,
    personalization_note,
    personalization_rows,
    personalize_config,
    run_personalization,
    style_summaries,
)


@pytest.fixture(scope="module")
def records():
    built = build_dataset("pets-ood", seed=0, num_train=4, num_test=8)
    return [r for r in built if r["split"] == "test"][:4]


def test_each_condition_conditions_on_its_summary(records):
    summaries = condition_summaries(records, {"plus": ["Likes dogs."] * len(records)})
    assert list(summaries) == ["default-resample", "oracle", "ideal-summary", "plus"]
    assert summaries["default-resample"] == [None] * len(records)
    assert summaries["oracle"] == [r["ground_truth"]["description"] for r in records]
    for record, ideal in zip(records, summaries["ideal-summary"], strict=True):
        own, other = contested_animals(record["ground_truth"]["profile"])
        assert own in ideal and other not in ideal
    with pytest.raises(ValueError, match="plus: the summary of record 1"):
        condition_summaries(records, {"plus": ["Likes dogs.", " ", "x", "y"]})
    with pytest.raises(ValueError, match="plus-untrained: 2 summaries for 4 records"):
        condition_summaries(records, {"plus-untrained": ["a", "b"]})
    with pytest.raises(ValueError, match="record 0 .* has no ground_truth.profile"):
        condition_summaries([{**records[0], "ground_truth": None}], {})


def _fake_answers(calls):
    """A generator that talks about dogs when its summary names dogs, else about cats."""

    def generate(model, tokenizer, prompts, summaries, **kwargs):
        calls.append(kwargs["seed"])
        return ["Dogs are loyal." if s and "dogs" in s else "Cats nap a lot." for s in summaries]

    return generate


def test_run_judges_resumes_and_sets_another_runs_answers_aside(records, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(personalize, "generate_responses", _fake_answers(calls))
    monkeypatch.setattr(plus.models, "load_causal_lm", lambda name: (None, None))
    config = PersonalizeConfig(generator="tiny-chat-lm", num_records=len(records), seeds=(0, 1))
    loop = {"plus": ["Prefers dogs."] * len(records), "plus-untrained": ["Prefers cats."] * len(records)}
    result = run_personalization(config, records, loop, tmp_path)
    assert len(calls) == 2 * 6  # default + 5 conditions, 2 seeds each
    cells = result["conditions"]
    assert cells["default-resample"]["win_rate"] == 0.5 and cells["default-resample"]["ties"] == 1.0
    # the ideal summary names dogs for the dog users: they win (dogs over cats), the cat users tie (cats = cats)
    dog_users = sum(contested_animals(r["ground_truth"]["profile"])[0] == "dog" for r in records)
    assert 0 < dog_users < len(records)
    assert math.isclose(cells["ideal-summary"]["win_rate"], (dog_users + 0.5 * (len(records) - dog_users)) / 4)
    assert cells["ideal-summary"]["subjects"]["own"] == 1.0
    for cell in cells.values():
        assert cell["ci_low"] <= cell["win_rate"] <= cell["ci_high"] and cell["n"] == len(records)
    # paired, per context: PLUS's dog answers beat the cat users' default cats for the dog users only
    difference = result["differences"]["plus - plus-untrained"]
    assert math.isclose(difference["mean"], (0.5 * dog_users - 0.5 * (len(records) - dog_users)) / len(records))
    assert difference["ci_low"] <= difference["mean"] <= difference["ci_high"]
    write_table(tmp_path / "table.json", personalization_rows(result))
    note = personalization_note(result)
    assert "the true description: win rate" in note and "72%" in note and "PLUS summaries minus" in note

    assert run_personalization(config, records, loop, tmp_path)["conditions"] == cells
    assert len(calls) == 12, "a finished run is read back, not generated again"
    run_personalization(PersonalizeConfig(generator="tiny-chat-lm", num_records=4, seeds=(0,)), records, {}, tmp_path)
    assert len(calls) == 16 and (tmp_path / "generations.json.stale").exists()


def test_bars_check_the_control_and_the_ideal_summary():
    def result(control, ideal):
        cell = lambda low, high: {"win_rate": (low + high) / 2, "ci_low": low, "ci_high": high}  # noqa: E731
        return {"config": {"dataset": "pets-ood"},
                "conditions": {"default-resample": cell(*control), "ideal-summary": cell(*ideal)}}  # fmt: skip

    assert [b["holds"] for b in personalization_bars(result((0.45, 0.55), (0.6, 0.7)))] == [True, True]
    assert [b["holds"] for b in personalization_bars(result((0.52, 0.6), (0.45, 0.7)))] == [False, False]


def test_config_and_records_are_checked(tmp_path):
    with pytest.raises(ValueError, match="temperature must be positive"):
        PersonalizeConfig(generator="tiny-chat-lm", temperature=float("nan"))
    with pytest.raises(ValueError, match="num_records must be a positive integer"):
        PersonalizeConfig(generator="tiny-chat-lm", num_records=0)
    smoke = personalize_config("smoke")
    heldout, found, missing = loop_summaries("smoke", tmp_path, smoke)
    assert len(heldout) == smoke.num_records and found == {} and missing == ["plus-untrained", "plus"]
    with pytest.raises(ValueError, match="fewer than num_records=1000"):
        loop_summaries("smoke", tmp_path, personalize_config("smoke", num_records=1000))


@pytest.fixture(scope="module")
def styled(tmp_path_factory):
    """The style population at smoke: 4 records (one per user), their prompts and tiny-LM summaries."""
    config = personalize_config("smoke", dataset=STYLE_DATASET)
    cache = tmp_path_factory.mktemp("styles") / "summaries.jsonl"
    return config, *style_summaries("smoke", config, cache)


def _styled_answers(calls):
    """A generator that writes a long, formal answer when its summary names formality, else a short casual one."""

    def generate(model, tokenizer, prompts, summaries, **kwargs):
        calls.append((kwargs["seed"], list(prompts)))
        formal = "Regarding your inquiry, the answer is therefore as follows, and it is stated in full here."
        return [formal if s and "formal" in s else "ok, it's basically fine." for s in summaries]

    return generate


def test_the_style_population_reads_flexible_summaries_and_is_judged_by_style(styled, tmp_path, monkeypatch):
    config, records, prompts, loop = styled
    assert [r["user_id"] for r in records] == ["verbose", "formal", "polite", "confident"]
    assert len(prompts) == len(records) and set(loop) == {"plus-untrained-guide", "plus-untrained-conversations"}
    assert list(condition_summaries(records, loop, STYLE_DATASET)) == [
        "default-resample", "oracle", "plus-untrained-guide", "plus-untrained-conversations"]  # fmt: skip
    with pytest.raises(ValueError, match="has no condition \\['plus'\\]"):
        condition_summaries(records, {"plus": ["x"] * 4}, STYLE_DATASET)
    with pytest.raises(ValueError, match="needs the prompt of every record"):
        run_personalization(config, records, loop, tmp_path)
    calls = []
    monkeypatch.setattr(personalize, "generate_responses", _styled_answers(calls))
    monkeypatch.setattr(plus.models, "load_causal_lm", lambda name: (None, None))
    result = run_personalization(config, records, loop, tmp_path, prompts=prompts)
    assert len(calls) == 5 and all(asked == prompts for _, asked in calls)  # default + 4 conditions, one seed
    cells = result["conditions"]
    # the oracle answer is formal only for the formal user, who then wins; the other users weigh no formality
    assert cells["oracle"]["win_rate"] == (1 + 0.5 * 3) / 4 and cells["oracle"]["subjects"]["pole"] == 0.25
    assert cells["default-resample"]["win_rate"] == 0.5
    # short and casual: the verbose and the formal user's opposite pole
    assert result["default_subjects"] == {"pole": 0.0, "neutral": 0.5, "opposite": 0.5}
    rows = personalization_rows(result)
    judged = [r for r in rows if r["method"] == "style-judge"]
    assert len(judged) == 7 and all(0.75 < r["mean"] <= 1 for r in judged if r["metric"] != "accuracy/verbosity")
    note = personalization_note(result)
    assert "the true description wins above 50%" in note and "no PLUS (trained) summaries" in note
    assert "are judged at the user's own pole" in note


def test_a_config_names_its_population():
    with pytest.raises(ValueError, match="dataset must be one of"):
        PersonalizeConfig(generator="tiny-chat-lm", dataset="pets")
    assert personalize_config("cpu", dataset=STYLE_DATASET).num_records == 200
