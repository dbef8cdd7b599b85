"""PReF algorithms on planted synthetic problems whose answers are known by construction."""

import dataclasses

import pytest
import torch

from plus.factorization import (
    PrefConfig,
    best_of_n,
    centre_labels,
    fit_bradley_terry,
    fit_pref,
    fit_user_weights,
    impute_low_rank,
    information_matrix,
    question_scores,
    select_question,
    svd_factors,
    win_rate,
)
from plus.factorization.core import pref_loss


@pytest.fixture(autouse=True)
def one_thread():
    """These are many small tensor ops: on a shared 2-core machine one thread is ~10x faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_config_defaults_are_the_papers_and_bad_values_fail():
    config = PrefConfig()
    paper = (config.num_factors, config.l2_weight, config.num_svd_rounds, config.prior_precision)
    assert paper == (5, 0.02, 10, 0.001)
    with pytest.raises(ValueError, match="num_factors"):
        PrefConfig(num_factors=0)
    with pytest.raises(ValueError, match="prior_precision"):
        PrefConfig(prior_precision=0.0)
    with pytest.raises(ValueError, match="l2_weight"):
        PrefConfig(l2_weight=-1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_factors = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "field, value",
    [("l2_weight", float("nan")), ("learning_rate", float("inf")), ("user_l2", "1.0"), ("num_epochs", 2.5),
     ("head_hidden", True), ("use_svd", "yes")],
)  # fmt: skip
def test_nan_inf_and_wrong_types_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"PrefConfig.{field} must be"):
        PrefConfig(**{field: value})


def test_svd_imputation_recovers_a_planted_low_rank_matrix():
    torch.manual_seed(0)
    a, b = torch.randn(80, 2), torch.randn(50, 2)
    planted = (0.24 * a @ b.T).clamp(-1, 1)  # (P, U) centred, rank 2
    missing = torch.rand(planted.shape) < 0.4
    observed = torch.where(missing, torch.full_like(planted, float("nan")), planted)
    filled = impute_low_rank(observed, rank=2, num_rounds=100)
    error = (filled - planted)[missing].abs().mean()
    baseline = planted[missing].abs().mean()  # the fill value (0) alone
    assert torch.equal(filled[~missing], planted[~missing]), "observed entries must not change"
    assert error < 0.1 * baseline, (error, baseline)
    assert filled.min() >= -1 and filled.max() <= 1


def test_warm_start_does_not_depend_on_the_order_of_each_pair():
    # Listing a pair's responses the other way round turns its labels p into 1 - p: the imputed centred matrix,
    # and so the product of the SVD factors, must change sign on exactly those rows, with entries missing too.
    torch.manual_seed(3)
    labels = (torch.rand(60, 30) < torch.sigmoid(torch.randn(60, 2) @ torch.randn(2, 30))).float()
    labels[torch.rand(labels.shape) < 0.6] = float("nan")
    flipped_rows = torch.rand(60) < 0.5
    flipped = torch.where(flipped_rows[:, None], 1 - labels, labels)
    product = {}
    for name, matrix in (("original", labels), ("flipped", flipped)):
        pair_factors, user_factors = svd_factors(impute_low_rank(centre_labels(matrix), rank=5), 5)
        product[name] = pair_factors @ user_factors.T  # (P, U)
    sign = torch.where(flipped_rows, -1.0, 1.0)[:, None]
    assert torch.allclose(product["flipped"], sign * product["original"], atol=1e-4)


def test_svd_factors_reconstruct_the_centred_matrix():
    torch.manual_seed(1)
    matrix = centre_labels((0.5 + 0.1 * torch.randn(30, 3) @ torch.randn(3, 20)).clamp(0, 1))
    pair_factors, user_factors = svd_factors(matrix, 20)
    assert torch.allclose(pair_factors @ user_factors.T, matrix, atol=1e-5)
    padded_pairs, padded_users = svd_factors(matrix[:, :2], 5)  # J above the rank: zero-padded factors
    assert padded_pairs.shape == (30, 5) and padded_users.shape == (2, 5)


def test_pref_loss_without_l2_is_the_bt_cross_entropy_and_log2_at_zero():
    weights, diffs = torch.zeros(6, 3), torch.randn(6, 3)
    loss, _ = pref_loss(weights, diffs, torch.tensor([1.0, 0, 1, 0, 1, 1]), l2_weight=0.0)
    assert torch.isclose(loss, torch.log(torch.tensor(2.0)))
    with_l2, metrics = pref_loss(weights, diffs, torch.ones(6), l2_weight=0.5)
    assert torch.isclose(with_l2 - loss, torch.tensor(0.5 * metrics["losses/l2"]), atol=1e-6)


def _planted_pairs(num_pairs: int, dim: int, weights: torch.Tensor, seed: int):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(2 * num_pairs, dim, generator=generator)
    pairs = torch.arange(2 * num_pairs).view(num_pairs, 2)
    logits = (features[pairs[:, 0]] - features[pairs[:, 1]]) @ weights
    labels = torch.bernoulli(torch.sigmoid(logits), generator=generator)
    return features, pairs, labels


@pytest.mark.parametrize("use_svd", [True, False])
def test_one_user_factorised_model_equals_a_single_bt_model(use_svd):
    torch.manual_seed(0)
    true_weights = torch.tensor([1.0, -0.5, 0.3, 0.0, 0.8])
    features, pairs, labels = _planted_pairs(600, 5, true_weights, seed=0)
    config = PrefConfig(num_factors=2, l2_weight=0.0, use_svd=use_svd, learning_rate=0.05, num_epochs=600)
    model, _ = fit_pref(features, pairs, labels[:, None], config, seed=0)  # one user: labels (P, 1)
    bt_head = fit_bradley_terry(
        features,
        *(torch.where(labels.bool(), pairs[:, k], pairs[:, 1 - k]) for k in (0, 1)),
        num_epochs=600,
        learning_rate=0.05,
    )
    # The exact maximum-likelihood linear BT model (Newton on the convex logistic loss).
    diffs = features[pairs[:, 0]] - features[pairs[:, 1]]
    mle = fit_user_weights(diffs, labels, torch.zeros(5), l2=0.0, num_steps=50)

    test_features, test_pairs, _ = _planted_pairs(200, 5, true_weights, seed=1)
    test_diffs = test_features[test_pairs[:, 0]] - test_features[test_pairs[:, 1]]
    first, second = test_features[test_pairs[:, 0]], test_features[test_pairs[:, 1]]
    pref_prob = torch.sigmoid((model.phi(first) - model.phi(second)) @ model.user_weights[0])
    with torch.no_grad():
        bt_prob = torch.sigmoid(bt_head(first) - bt_head(second)).squeeze(-1)
    mle_prob = torch.sigmoid(test_diffs @ mle)
    assert (pref_prob - mle_prob).abs().max() < 0.02
    assert (bt_prob - mle_prob).abs().max() < 0.02


def test_fit_pref_is_deterministic_and_trains():
    features, pairs, labels = _planted_pairs(100, 6, torch.randn(6), seed=3)
    matrix = torch.stack([labels, 1 - labels, labels], 1)  # (P, 3)
    config = PrefConfig(num_factors=2, num_epochs=50, num_warm_start_epochs=20)
    first, history = fit_pref(features, pairs, matrix, config, seed=7)
    second, _ = fit_pref(features, pairs, matrix, config, seed=7)
    assert torch.equal(first.user_weights, second.user_weights)
    assert history[-1]["losses/bt"] < history[1]["losses/bt"]


def test_new_user_lambda_is_the_prior_without_answers():
    prior = torch.tensor([0.3, -1.0])
    assert torch.equal(fit_user_weights(torch.zeros(0, 2), torch.zeros(0), prior), prior)


def test_new_user_lambda_converges_to_the_planted_one():
    planted = torch.tensor([1.5, -1.0, 0.5])
    generator = torch.Generator().manual_seed(0)
    diffs = torch.randn(5000, 3, generator=generator)
    labels = torch.bernoulli(torch.sigmoid(diffs @ planted), generator=generator)
    errors = [
        (fit_user_weights(diffs[:n], labels[:n], torch.zeros(3), l2=1.0) - planted).norm().item()
        for n in (10, 100, 5000)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.15


def test_information_matrix_matches_a_naive_sum():
    generator = torch.Generator().manual_seed(0)
    answered, lam = torch.randn(7, 3, generator=generator), torch.randn(3, generator=generator)
    naive = 0.001 * torch.eye(3)
    for v in answered:
        p = torch.sigmoid(lam @ v)
        naive = naive + p * (1 - p) * torch.outer(v, v)
    assert torch.allclose(information_matrix(answered, lam, 0.001), naive, atol=1e-6)


def test_active_selection_picks_the_most_informative_pair():
    lam = torch.zeros(2)
    # Three answers already pin down the first direction; the second is unknown.
    answered = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [0.0, 0.2]])
    assert select_question(candidates, answered, lam, 0.001) == 1
    # A pair the user is already sure about (large margin) teaches little, however unexplored.
    lam = torch.tensor([0.0, 8.0])
    assert select_question(candidates, answered, lam, 0.001) == 3
    # The criterion agrees with its definition computed entry by entry.
    sigma_inv = torch.linalg.inv(information_matrix(answered, lam, 0.001))
    naive = []
    for v in candidates:
        p = torch.sigmoid(lam @ v)
        naive.append((p * (1 - p)) ** 2 * v @ sigma_inv @ v)
    assert torch.allclose(question_scores(candidates, answered, lam, 0.001), torch.stack(naive), rtol=1e-4)


def test_best_of_n_with_the_true_reward_never_loses_and_the_reverse_never_wins():
    generator = torch.Generator().manual_seed(0)
    true = torch.randn(50, 8, generator=generator)
    default = torch.randint(8, (50,), generator=generator)
    best_rate, outcomes = win_rate(true, best_of_n(true), default)
    worst_rate, _ = win_rate(true, best_of_n(-true), default)
    assert torch.all(outcomes >= 0.5) and best_rate > 0.8
    assert worst_rate < 0.2
    assert torch.equal(best_of_n(true), true.argmax(-1))
