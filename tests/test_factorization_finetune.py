"""phi with its encoder's top block fine-tuned: it starts exactly at the frozen-head fit and then trains."""

import pytest
import torch

from plus.config import get_profile
from plus.factorization.core import fit_pref, observed_entries, pref_loss
from plus.factorization.experiment import build_attributes_problem, pref_experiment_config
from plus.factorization.finetune import EncoderStates, FinetuneConfig, FinetunedPref, finetune_pref


@pytest.fixture(scope="module")
def setup():
    config = pref_experiment_config(get_profile("smoke"), num_seeds=1)
    problem = build_attributes_problem(config, seed=0)
    encoder = EncoderStates(config.embedding_model, num_blocks=1, max_length=config.max_length)
    return config, problem, encoder


def _loss(model, features, population):
    pair_idx, user_idx, targets = observed_entries(population.labels)
    phi = model.phi(features)
    diffs = phi[population.pairs[pair_idx, 0]] - phi[population.pairs[pair_idx, 1]]
    return pref_loss(model.user_weights[user_idx], diffs, targets, model.config.l2_weight)[0].item()


def test_the_top_block_on_kept_states_gives_the_frozen_features(setup):
    config, problem, encoder = setup
    with torch.no_grad():
        raw = encoder.pooled(encoder.trainable_copy(), problem.inputs)
    standardised = (raw - raw.mean(0)) / raw.std(0).clamp_min(1e-6)
    assert torch.allclose(standardised, problem.bank.features, atol=1e-4)


def test_fine_tuning_starts_from_the_frozen_fit_and_lowers_its_training_loss(setup):
    config, problem, encoder = setup
    population = problem.population
    model, _ = fit_pref(problem.bank.features, population.pairs, population.labels, config.pref, seed=0)
    zero_step = FinetuneConfig(num_epochs=1, learning_rate=1e-12)
    same, features, _ = finetune_pref(model, population, encoder, problem.inputs, zero_step, seed=0)
    assert torch.allclose(features, problem.bank.features, atol=1e-4)
    assert torch.allclose(same.phi(features), model.phi(problem.bank.features), atol=1e-3)
    tuned, features, history = finetune_pref(
        model, population, encoder, problem.inputs, FinetuneConfig(num_epochs=8, learning_rate=3e-3), seed=0
    )
    epochs = [row for row in history if "losses/pref" in row]
    assert len(epochs) == 8 and all(torch.isfinite(torch.tensor(row["losses/pref"])) for row in epochs)
    assert history[0]["epoch"] == -1 and history[-1]["epoch"] == 8
    assert history[-1]["losses/pref_full"] < history[0]["losses/pref_full"]
    assert not torch.allclose(features, problem.bank.features, atol=1e-3)  # the block moved
    assert _loss(tuned, features, population) < _loss(model, problem.bank.features, population)
    assert not any(p.requires_grad for p in encoder.blocks.parameters())  # the shared encoder is left frozen


def test_a_fine_tuned_method_without_its_encoder_is_an_error(setup):
    config, problem, _ = setup
    with pytest.raises(ValueError, match="needs an encoder and one text per bank row"):
        FinetunedPref(config.pref, name="ft").fit(problem.bank, problem.population, seed=0)
    with pytest.raises(ValueError, match="FinetuneConfig.num_epochs must be"):
        FinetuneConfig(num_epochs=float("nan"))
