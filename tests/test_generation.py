import pytest
import torch

from plus.data.attributes import user_ground_truth
from plus.data.pets import contested_animals
from plus.data.registry import build_dataset
from plus.generation import (
    PERSONALIZE_INSTRUCTION,
    generate_responses,
    generator_messages,
    pets_outcomes,
    style_outcomes,
)
from plus.judge import StyleJudge


def test_the_summary_goes_into_the_instructions():
    assert generator_messages("A pet?") == [{"role": "user", "content": "A pet?"}]
    system, user = generator_messages("A pet?", " Likes cats. ")
    assert system == {"role": "system", "content": PERSONALIZE_INSTRUCTION.format(summary="Likes cats.")}
    assert user == {"role": "user", "content": "A pet?"}
    with pytest.raises(ValueError, match="an empty summary personalizes nothing"):
        generator_messages("A pet?", "  ")
    with pytest.raises(ValueError, match="non-empty prompt"):
        generator_messages("", "Likes cats.")


def test_generation_is_seeded_batched_and_leaves_the_rng_alone(tiny_chat_lm):
    model, tokenizer = tiny_chat_lm
    prompts = ["A pet?", "Tell me about one kind of pet, in one sentence.", "Another?"]
    summaries = ["Likes cats.", None, "Likes dogs."]
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    first = generate_responses(model, tokenizer, prompts, summaries, max_new_tokens=5, batch_size=3, seed=1)
    assert torch.equal(torch.rand(1), expected_next)
    assert len(first) == 3 and all(isinstance(text, str) for text in first)
    assert generate_responses(model, tokenizer, prompts, summaries, max_new_tokens=5, batch_size=3, seed=1) == first
    with pytest.raises(ValueError, match="prompt 1: an empty summary"):
        generate_responses(model, tokenizer, prompts, ["Likes cats.", "", None], max_new_tokens=5)
    with pytest.raises(ValueError, match="3 prompts but 2 summaries"):
        generate_responses(model, tokenizer, prompts, summaries[:2], max_new_tokens=5)
    with pytest.raises(ValueError, match="must be positive"):
        generate_responses(model, tokenizer, prompts, summaries, temperature=float("nan"))


def test_pets_outcomes_judge_personalized_against_default_answers():
    records = [r for r in build_dataset("pets", seed=0, num_train=4, num_test=4) if r["split"] == "test"][:2]
    own = [contested_animals(r["ground_truth"]["profile"]) for r in records]
    personalized = [f"{own[0][0].capitalize()}s are wonderful.", "Birds and rabbits both sing."]
    default = [f"{own[0][1].capitalize()}s are wonderful.", f"A {own[1][0]} is lovely."]
    assert pets_outcomes(records, personalized, default) == [1.0, 0.5]  # a win; several animals: a tie
    with pytest.raises(ValueError, match="2 records, 1 personalized and 2 default"):
        pets_outcomes(records, personalized[:1], default)
    with pytest.raises(ValueError, match="record 0 .* has no ground_truth.profile"):
        pets_outcomes([{"user_id": "u"}], ["A dog."], ["A cat."])


def test_style_outcomes_compare_answers_by_the_users_judged_utility():
    judge = StyleJudge(short_words=5, long_words=12)
    users = [{"user_id": pole, "ground_truth": user_ground_truth(pole)} for pole in ("verbose", "formal", "polite")]
    long_answer = "Tides rise and fall because the moon pulls the oceans toward it as the earth turns beneath."
    formal = "Regarding your inquiry, tides are caused by the moon."
    polite = "Thank you for asking. Tides are caused by the moon."
    plain = "Tides come from the moon."
    assert style_outcomes(users, [long_answer, formal, polite], [plain, plain, plain], judge) == [1.0, 1.0, 1.0]
    assert style_outcomes(users, [plain, plain, plain], [long_answer, formal, polite], judge) == [0.0, 0.0, 0.0]
    assert style_outcomes(users, [formal, formal, polite], [polite, polite, formal], judge) == [0.5, 1.0, 1.0]
    # an empty answer answers nothing: it loses to any answer and ties with another empty one
    assert style_outcomes(users[:2], ["", " "], [plain, ""], judge) == [0.0, 0.5]
    assert style_outcomes(users[:1], [plain], [""], judge) == [1.0]
    with pytest.raises(ValueError, match="record 0 \\('x'\\) has no ground_truth.profile"):
        style_outcomes([{"user_id": "x"}], [plain], [plain], judge)
    with pytest.raises(ValueError, match="1 records, 2 personalized"):
        style_outcomes(users[:1], [plain, plain], [plain], judge)
