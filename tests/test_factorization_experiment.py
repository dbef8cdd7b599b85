"""The Attributes adapter: records of `plus.data` -> the protocol's tensors, at the smoke profile."""

import math

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


def test_population_subset_keeps_the_first_answers_of_the_first_users_and_is_nested(problem_and_records):
    from plus.factorization.experiment import population_subset

    problem, _ = problem_and_records
    labels = problem.population.labels  # smoke: every user answered 6 pairs
    small, more_answers = population_subset(labels, 4, 2, seed=0), population_subset(labels, 4, 5, seed=0)
    more_users = population_subset(labels, 8, 2, seed=0)
    assert small.shape == (labels.shape[0], 4) and more_users.shape == (labels.shape[0], 8)
    assert ((~small.isnan()).sum(0) == 2).all() and ((~more_answers.isnan()).sum(0) == 5).all()
    for c in range(more_users.shape[1]):  # each column is one user's own labels, a subset of them
        kept = ~more_users[:, c].isnan()
        owners = [j for j in range(labels.shape[1]) if torch.equal(labels[kept, j], more_users[kept, c])]
        assert owners
    kept = ~small.isnan()
    assert (~more_answers.isnan())[kept].all() and torch.equal(~more_users[:, :4].isnan(), kept)


def test_mean_training_user_reward_is_the_mean_of_the_training_users_true_rewards(problem_and_records):
    from plus.data import build_response_bank, ground_truth_reward

    problem, records = problem_and_records
    profiles = {r["user_id"]: r["ground_truth"]["profile"] for r in records if r["split"] == "train"}
    bank = build_response_bank(0, 8)
    responses = [r for prompt_id in sorted(bank.responses) for r in bank.responses[prompt_id]]
    expected = torch.tensor([sum(ground_truth_reward(p, r.scores) for p in profiles.values()) for r in responses])
    assert torch.allclose(problem.mean_train_reward, expected / len(profiles), atol=1e-6)
    assert len(problem.inputs) == len(problem.texts) == problem.bank.features.shape[0]


def test_both_populations_run_with_the_reference_the_diagnostics_and_the_scaling_study(tmp_path):
    from plus.artifacts import write_table
    from plus.factorization.experiment import (
        FINETUNED,
        MEAN_USER,
        TRUE_PHI,
        active_vs_random_table,
        pref_table_rows,
        run_attributes_experiment,
    )  # fmt: skip
    from plus.factorization.finetune import FinetuneConfig

    cache = {}
    for dataset in ("attributes", "archetypes"):
        config = pref_experiment_config(
            get_profile("smoke"), num_seeds=1, dataset=dataset, finetune=FinetuneConfig(num_epochs=1),
            scaling_users=(2, 4), scaling_answers=(2, 6),
        )  # fmt: skip
        result = run_attributes_experiment(config, cache=cache)
        assert result["dataset"] == dataset
        assert {r["method"] for r in result["reference_rows"]} == {MEAN_USER}
        assert {FINETUNED, TRUE_PHI} <= {r["method"] for r in result["ablation_rows"]}
        grid = {(r["num_train_users"], r["answers_per_user"]) for r in result["scaling_rows"]}
        assert grid == {(2, 2), (2, 6), (4, 2), (4, 6)}
        information = [r for r in result["information_rows"] if r["num_answers"] >= 0]
        assert {r["method"] for r in information} == {"PReF (active)", "PReF (random)"}
        assert all(math.isfinite(r["log_det"]) for r in information)
        assert all(r["asked_margin"] > 0 for r in information if r["num_answers"] > 0)
        rows = pref_table_rows(result)
        write_table(tmp_path / f"{dataset}.json", rows)  # every row valid
        methods = {r["method"] for r in rows}
        assert {"pref-active", "pref-active-minus-random", "pref-active-top-block-fine-tuned", "mean-user-truth",
                "pref-active-users4-answers6"} <= methods  # fmt: skip
        assert {r["dataset"] for r in rows} == {dataset}
        table = active_vs_random_table({dataset: result}, rows, (2, 5))
        assert len(table) == 2 and all(math.isfinite(row["asked margin, active"]) for row in table)
        assert all(r["reported"] is None for r in rows) or dataset == "attributes"
    assert len(cache) > 0  # the second population reused the first one's embeddings


def test_the_true_base_rewards_have_the_rank_of_the_population(problem_and_records):
    from plus.factorization.experiment import build_attributes_problem

    problem, _ = problem_and_records
    assert problem.true_features.shape == (problem.bank.features.shape[0], 7)  # two-pole users span all seven
    config = pref_experiment_config(get_profile("smoke"), num_seeds=1, dataset="archetypes")
    archetypes = build_attributes_problem(config, seed=0)
    assert archetypes.true_features.shape[1] == 3  # three archetypes
    columns = torch.cat([archetypes.true_features.double(), torch.ones(len(archetypes.true_features), 1)], 1)
    for user in archetypes.new_users:  # every user's true reward is a mix of those three (standardised) columns
        solution = torch.linalg.lstsq(columns, user.rewards.double()[:, None])
        residual = columns @ solution.solution - user.rewards.double()[:, None]
        assert residual.abs().max() < 1e-6 * (1 + user.rewards.abs().max())
