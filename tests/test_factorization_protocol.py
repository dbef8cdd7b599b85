"""The new-user protocol on a planted population: users are signed pairs of 'attributes' of known linear features."""

import math

import pytest
import torch

from plus.factorization import (
    NewUser,
    PalNewUser,
    PerUserBT,
    PrefConfig,
    PrefNewUser,
    ResponseBank,
    SingleBT,
    TrainingPopulation,
    VplNewUser,
    evaluate_new_users,
    pair_metrics,
    summarize,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Many small tensor ops: on a shared 2-core machine one thread is much faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def planted_population(num_attributes: int = 4, dim: int = 12, num_responses: int = 400, seed: int = 0):
    """Responses with features (R, H); attribute scores = features @ A (H, K); a user prefers two poles of different
    attributes (like the Attributes users). Returns the bank, the user weights (U, K) and the true scores (R, K)."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(num_responses, dim, generator=generator)
    scores = features @ torch.randn(dim, num_attributes, generator=generator) / math.sqrt(dim)  # (R, K)
    users = []
    for a in range(num_attributes):
        for b in range(a + 1, num_attributes):
            for sa in (1.0, -1.0):
                for sb in (1.0, -1.0):
                    weights = torch.zeros(num_attributes)
                    weights[a], weights[b] = 3 * sa, 3 * sb
                    users.append(weights)
    bank = ResponseBank(features=features, prompt_features=torch.zeros_like(features))
    return bank, torch.stack(users), scores


def planted_labels(pairs: torch.Tensor, user: torch.Tensor, scores: torch.Tensor, generator: torch.Generator):
    """BT labels (P,) of a user with weights (K,) on pairs (P, 2)."""
    margin = (scores[pairs[:, 0]] - scores[pairs[:, 1]]) @ user
    return torch.bernoulli(torch.sigmoid(margin), generator=generator)


def planted_split(seed: int = 0):
    bank, users, scores = planted_population(seed=seed)
    generator = torch.Generator().manual_seed(seed)
    num_r = len(bank.features)
    train_pairs = torch.randint(num_r, (300, 2), generator=generator)
    order = torch.randperm(len(users), generator=generator)
    train_users, new_users = users[order[:18]], users[order[18:]]
    labels = torch.stack([planted_labels(train_pairs, u, scores, generator) for u in train_users], 1)  # (P, U)
    labels[torch.rand(labels.shape, generator=generator) < 0.3] = float("nan")  # each user answers ~70%
    population = TrainingPopulation(pairs=train_pairs, labels=labels)
    new = []
    for i, weights in enumerate(new_users):
        questions, tests = (
            torch.randint(num_r, (60, 2), generator=generator),
            torch.randint(num_r, (150, 2), generator=generator),
        )
        candidates = torch.randint(num_r, (20, 8), generator=generator)
        new.append(
            NewUser(
                user_id=f"user{i}",
                question_pairs=questions,
                question_labels=planted_labels(questions, weights, scores, generator),
                test_pairs=tests,
                test_labels=planted_labels(tests, weights, scores, generator),
                candidates=candidates,
                candidate_rewards=scores[candidates] @ weights,
                default=torch.zeros(20, dtype=torch.long),
            )
        )
    return bank, population, new


def test_pair_metrics_perfect_reversed_and_constant_scores():
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5])
    assert pair_metrics(torch.tensor([2.0, -1.0, 0.5, -3.0, 9.0]), labels) == {"auc": 1.0, "accuracy": 1.0}
    assert pair_metrics(torch.tensor([-2.0, 1.0, -0.5, 3.0, 0.0]), labels) == {"auc": 0.0, "accuracy": 0.0}
    assert pair_metrics(torch.zeros(5), labels) == {"auc": 0.5, "accuracy": 0.5}
    assert math.isnan(pair_metrics(torch.ones(2), torch.ones(2))["auc"])


def test_new_user_bad_input_names_the_user():
    with pytest.raises(ValueError, match="'u7'"):
        NewUser("u7", torch.zeros(3, 2, dtype=torch.long), torch.zeros(2), torch.zeros(1, 2), torch.zeros(1))


@pytest.mark.slow
def test_pref_learns_planted_users_and_beats_a_single_bt_model():
    bank, population, users = planted_split()
    config = PrefConfig(num_factors=4, learning_rate=0.01, num_epochs=400)
    methods = [
        SingleBT(num_epochs=200),
        PerUserBT(),
        PrefNewUser(config, active=True),
        PrefNewUser(config, active=False),
        PalNewUser(num_epochs=100, num_user_steps=30),
        VplNewUser(num_steps=60, max_context=20),
    ]
    for method in methods:
        method.fit(bank, population, seed=0)
    rows = evaluate_new_users(methods, bank, users, [0, 3, 20], seed=0)
    table = {(r["method"], r["num_answers"]): r for r in summarize(rows)}
    assert len(rows) == len(methods) * len(users) * 3
    assert all(math.isfinite(r["accuracy"]) and 0 <= r["win_rate"] <= 1 for r in rows)
    assert table[("PReF (active)", 20)]["auc"] > 0.85
    assert table[("PReF (random)", 20)]["auc"] > table[("PReF (random)", 0)]["auc"] + 0.2
    assert table[("PReF (random)", 20)]["auc"] > table[("Single BT", 20)]["auc"] + 0.2
    assert table[("PReF (active)", 20)]["win_rate"] > 0.7
    # The same answers reach every passive method; an active one records what it asked.
    assert all(r["num_answered"] == r["num_answers"] for r in rows)


def test_passive_methods_ignore_nothing_but_the_answers_order():
    """Two runs with the same seed give identical rows (question order and fits are seeded)."""
    bank, population, users = planted_split(seed=1)
    config = PrefConfig(num_factors=3, num_epochs=30, num_warm_start_epochs=10)
    runs = []
    for _ in range(2):
        method = PrefNewUser(config, active=False)
        method.fit(bank, population, seed=3)
        runs.append(evaluate_new_users([method], bank, users[:2], [0, 4], seed=5))
    assert runs[0] == runs[1]
