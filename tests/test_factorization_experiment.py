"""The Attributes adapter: records of `plus.data` -> the protocol's tensors, at the smoke profile."""

import pytest
import torch

from plus.config import get_profile
from plus.data import build_pref_attributes
from plus.factorization.experiment import build_attributes_problem, pref_experiment_config


@pytest.fixture(scope="module")
def problem_and_records():
    config = pref_experiment_config(get_profile("smoke"), num_seeds=1)
    records = build_pref_attributes(seed=0, **dict(config.data_sizes))
    return build_attributes_problem(config, seed=0), records


def test_training_matrix_holds_exactly_the_train_answers(problem_and_records):
    problem, records = problem_and_records
    train = [r for r in records if r["split"] == "train"]
    labels = problem.population.labels
    assert int((~labels.isnan()).sum()) == len(train)
    assert labels.shape[1] == len({r["user_id"] for r in train}) == len(problem.train_user_ids)
    # Label 1 means the pair's first response is the one the user chose.
    texts = problem.texts
    column = {u: j for j, u in enumerate(problem.train_user_ids)}
    first_wins = {(texts[a], texts[b]): i for i, (a, b) in enumerate(problem.population.pairs.tolist())}
    for r in train[:50]:
        key = (r["eval_chosen"], r["eval_rejected"])
        row = first_wins.get(key, first_wins.get(key[::-1]))
        expected = 1.0 if key in first_wins else 0.0
        assert labels[row, column[r["user_id"]]] == expected


def test_new_users_are_asked_their_own_answers_first_and_never_their_heldout_pairs(problem_and_records):
    problem, records = problem_and_records
    texts = problem.texts
    for user in problem.new_users:
        own = [r for r in records if r["split"] == "test_new_users" and r["user_id"] == user.user_id]
        answers = {frozenset((r["eval_chosen"], r["eval_rejected"])) for r in own if r["role"] == "answer"}
        heldout = {frozenset((r["eval_chosen"], r["eval_rejected"])) for r in own if r["role"] == "heldout"}
        questions = [frozenset((texts[a], texts[b])) for a, b in user.question_pairs.tolist()]
        assert set(questions[: user.num_given]) == answers and user.num_given == len(answers)
        assert not heldout & set(questions)
        assert {frozenset((texts[a], texts[b])) for a, b in user.test_pairs.tolist()} == heldout
        # Ground-truth labels: the chosen side of every held-out record is the one the label points to.
        chosen = {r["eval_chosen"] for r in own if r["role"] == "heldout"}
        for (a, b), label in zip(user.test_pairs.tolist(), user.test_labels.tolist(), strict=True):
            assert (texts[a] if label == 1.0 else texts[b]) in chosen
        assert user.candidates.shape[1] == 8 and torch.all(user.default == 0)


@pytest.mark.parametrize(
    "field, value", [("num_best_of_n", float("nan")), ("num_best_of_n", 1), ("max_length", float("nan")),
                     ("num_threads", "2"), ("num_vpl_steps", 0)],
)  # fmt: skip
def test_experiment_config_refuses_nan_strings_and_out_of_range_values_naming_the_field(field, value):
    from dataclasses import replace

    from plus.config import get_profile
    from plus.factorization.experiment import pref_experiment_config

    with pytest.raises(ValueError, match=f"PrefExperimentConfig.{field} must be"):
        replace(pref_experiment_config(get_profile("smoke")), **{field: value})
