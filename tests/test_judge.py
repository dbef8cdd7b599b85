import math

import pytest
from toy_users import KeywordRewardModel

from plus.data.pets import animal_of, contested_animals
from plus.data.registry import build_dataset
from plus.judge import (
    edit_follows,
    pairwise_outcome,
    pets_animals,
    pets_subject,
    pets_utility,
    score_under_summary,
    swap_pets_animal,
    win_rate,
)

PROFILE = {"bird": 1, "dog": 3, "cat": 2, "rabbit": 0}  # ranked dog > cat > bird > rabbit: contested cat vs bird


@pytest.fixture(scope="module")
def pets():
    return build_dataset("pets", seed=0, num_train=8, num_test=16)


def test_the_pets_judge_reads_free_text():
    assert pets_animals("Puppies love a long walk.") == {"dog"}
    assert pets_animals("A KITTEN naps all day; bunnies hop.") == {"cat", "rabbit"}
    assert pets_animals("Catalogue your doghouse plans.") == set()  # words, not substrings
    assert pets_utility("Parrots can learn words.", PROFILE) == 1.0
    assert pets_utility("Dogs and cats both make good pets.", PROFILE) is None  # several animals: no preference
    assert pets_subject("A cat likes to watch birds through the window.") == "cat"  # a later mention
    assert pets_subject("A Maine Coon is huge.") == "cat" and pets_subject("Nothing here.") is None
    assert pets_utility("", PROFILE) is None
    with pytest.raises(ValueError, match="lacks utilities for \\['rabbit'\\]"):
        pets_utility("A dog.", {"bird": 1, "dog": 3, "cat": 2})
    with pytest.raises(TypeError, match="must be text"):
        pets_animals(None)


def test_the_judge_agrees_with_the_data_sets_own_labels(pets):
    for record in pets:
        for response in (record["eval_chosen"], record["eval_rejected"]):
            assert pets_subject(response) == animal_of(response), response


def test_pairwise_outcomes_count_ties_as_half():
    assert [pairwise_outcome(3, 1), pairwise_outcome(1, 3), pairwise_outcome(2, 2)] == [1.0, 0.0, 0.5]
    assert pairwise_outcome(None, 3) == pairwise_outcome(3, None) == 0.5
    rate = win_rate([[1.0, 0.5, 0.0, 1.0], [1.0, 1.0, 0.5, 0.5]])
    assert math.isclose(rate["mean"], 5.5 / 8) and rate["ties"] == 3 / 8 and rate["n"] == 4
    assert rate["ci_low"] <= rate["mean"] <= rate["ci_high"]
    with pytest.raises(ValueError, match="1 \\(win\\), 0 \\(loss\\) or 0.5"):
        win_rate([[0.7]])
    with pytest.raises(ValueError, match="at least one judged prompt"):
        win_rate([[]])


def test_the_edit_flips_a_reader_and_not_a_model_that_ignores_the_summary(pets):
    contested = [r for r in pets if r["contested"]]
    assert contested
    summaries = [f"This user prefers responses about {contested_animals(r['ground_truth']['profile'])[0]}s."
                 for r in contested]  # fmt: skip
    edit = lambda z, r: swap_pets_animal(z, r["ground_truth"]["profile"])  # noqa: E731
    reader = edit_follows(KeywordRewardModel(reads=True), contested, summaries, edit)
    assert reader == {"follows": 1.0, "accuracy_before": 1.0, "accuracy_after": 0.0, "edited": len(contested)}
    blind = edit_follows(KeywordRewardModel(reads=False), contested, summaries, edit)
    assert blind["follows"] == 0.0 and blind["accuracy_before"] == blind["accuracy_after"]
    with pytest.raises(ValueError, match="no contested record whose summary the edit changes"):
        edit_follows(KeywordRewardModel(reads=True), contested, ["No animal here."] * len(contested), edit)
    with pytest.raises(ValueError, match="2 records but 1 summaries"):
        edit_follows(KeywordRewardModel(reads=True), contested[:2], summaries[:1], edit)


def test_swapping_keeps_the_form_of_each_word():
    assert contested_animals(PROFILE) == ("cat", "bird")
    assert swap_pets_animal("Cats, not birds; a cat.", PROFILE) == "Birds, not cats; a bird."
    assert swap_pets_animal("Kittens first.", PROFILE) == "Birds first."
    assert swap_pets_animal("Dogs only.", PROFILE) is None


def test_a_pair_is_scored_under_a_summary_written_by_hand():
    model = KeywordRewardModel(reads=True)
    assert score_under_summary(model, "This user likes cats.", "A pet?", "Cats purr.", "Dogs bark.") == 0.5
    assert score_under_summary(model, "This user likes dogs.", "A pet?", "Cats purr.", "Dogs bark.") == -1.5
    with pytest.raises(ValueError, match="summary must be non-empty text"):
        score_under_summary(model, " ", "A pet?", "Cats purr.", "Dogs bark.")
