import math

import pytest
from toy_users import KeywordRewardModel

from plus.data.attributes import ATTRIBUTES, build_response_bank
from plus.data.pets import animal_of, contested_animals
from plus.data.registry import build_dataset
from plus.judge import (
    StyleJudge,
    content_words,
    edit_follows,
    fit_style_judge,
    pairwise_outcome,
    pets_animals,
    pets_subject,
    pets_utility,
    score_under_summary,
    style_accuracy,
    style_poles,
    style_scores,
    style_utility,
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


# ---------------------------------------------------------------------------------------------------------------
# The style judge


JUDGE = StyleJudge(short_words=8, long_words=30)


@pytest.mark.parametrize(
    ("response", "attribute", "score"),
    [
        ("Regarding your enquiry, houseplants therefore need light.", "formality", 1),
        ("Okay, so basically it's fine, don't worry.", "formality", -1),
        ("Here is a joke for you: my plant is a fern, and it's funny.", "humor", 1),
        ("This is a serious matter.", "humor", -1),
        ("Water it weekly. Have you tried that?", "engagement", 1),
        ("Water it weekly. That's all.", "engagement", -1),
        ("Thank you for asking. Water it weekly, please.", "politeness", 1),
        ("Obviously you should know this; it's stupid to ask.", "politeness", -1),
        ("Wow, watering plants is exciting!", "enthusiasm", 1),
        ("If I may, a modest suggestion: water it weekly.", "enthusiasm", -1),
        ("Definitely water it weekly; it clearly works.", "confidence", 1),
        ("I think you might water it weekly, but I'm not sure.", "confidence", -1),
        ("Water it.", "verbosity", -1),
        (" ".join(["Water the plant in the morning and keep it near a bright window."] * 4), "verbosity", 1),
        ("Water the plant in the morning and keep it near a bright window, away from drafts.", "verbosity", 0),
    ],
)
def test_the_style_judge_reads_each_pole_of_hand_made_responses(response, attribute, score):
    assert style_scores(response, JUDGE)[attribute] == score


def test_the_style_judge_leaves_unmarked_attributes_at_zero_and_weights_them_by_the_profile():
    plain = "Water the plant in the morning and keep it near a bright window, away from drafts."
    assert style_scores(plain, JUDGE) == {a: 0 for a in ATTRIBUTES}
    polite = "Thank you for asking. Water the plant in the morning and keep it near a bright window."
    assert style_utility(polite, {"politeness": 1.0, "verbosity": -1.0}, JUDGE) == 1.0
    assert style_utility(polite, {"politeness": -0.5}, JUDGE) == -0.5
    # style lines are not content: a polite opener adds no length
    assert content_words("Thank you for asking. Water it.") == content_words("Water it.") == 2


def test_the_style_judge_names_bad_input():
    with pytest.raises(ValueError, match="non-empty response"):
        style_scores("  ", JUDGE)
    with pytest.raises(ValueError, match="does not score: \\['sarcasm'\\]"):
        style_utility("Water it.", {"sarcasm": 1.0}, JUDGE)
    with pytest.raises(ValueError, match="0 <= short_words < long_words"):
        StyleJudge(short_words=30, long_words=8)
    with pytest.raises(ValueError, match="as many known scores as texts"):
        fit_style_judge(["a b c"], [1, 0])


def test_the_fitted_judge_reads_held_out_bank_responses():
    """Cuts fitted on bank 0's known verbosity; every attribute validated on bank 1 (other draws of the grammar)."""
    fit = [r for rs in build_response_bank(0).responses.values() for r in rs]
    held = [r for rs in build_response_bank(1).responses.values() for r in rs]
    judge = fit_style_judge([r.text for r in fit], [r.scores["verbosity"] for r in fit])
    accuracy = style_accuracy(judge, [r.text for r in held], [r.scores for r in held])
    assert set(accuracy) == set(ATTRIBUTES)
    assert min(accuracy.values()) >= 0.75, accuracy
    assert sum(accuracy.values()) / len(accuracy) >= 0.9, accuracy


def test_the_pole_words_read_every_description_and_guide_of_each_pole():
    from plus.data.attributes import POLES, user_ground_truth
    from plus.data.flexible import GUIDE_PHRASES

    for pole in (p for ends in POLES.values() for p in ends):
        for text in [user_ground_truth(pole)["description"], *GUIDE_PHRASES[pole]]:
            assert style_poles(text) == {pole}, text


@pytest.mark.parametrize(
    ("text", "poles"),
    [
        ("No jokes, please.", {"serious"}),
        ("I don't want long answers; keep it short.", {"concise"}),
        ("Without a doubt the answer is right.", {"confident"}),
        ("Detailed, formal and funny.", {"verbose", "formal", "humorous"}),
        ("Informal? Unengaging? Impolite.", {"informal", "unengaging", "rude"}),
        ("What a lovely day.", set()),
        ("", set()),
    ],
)
def test_pole_words_are_whole_words_and_a_negation_names_the_opposite(text, poles):
    assert style_poles(text) == poles


def test_pole_words_name_bad_input():
    from plus.data.attributes import opposite_pole

    with pytest.raises(TypeError, match="must be text"):
        style_poles(None)
    assert opposite_pole("rude") == "polite" and opposite_pole("verbose") == "concise"
    with pytest.raises(ValueError, match="unknown attribute pole 'loud'"):
        opposite_pole("loud")


def test_the_style_swap_turns_each_true_description_into_its_opposite():
    from plus.data.attributes import POLES, opposite_pole, user_ground_truth
    from plus.judge import swap_style_poles

    for pole in (p for ends in POLES.values() for p in ends):
        description = user_ground_truth(pole)["description"]
        assert swap_style_poles(description, [pole]) == user_ground_truth(opposite_pole(pole))["description"]
    assert swap_style_poles("Give me details, not jokes.", ["verbose"]) == "Give me concise, not jokes."
    assert swap_style_poles("Dogs are great.", ["verbose"]) is None
    with pytest.raises(TypeError, match="must be text"):
        swap_style_poles(None, ["verbose"])
