"""The VPL and PAL-B networks are defined once: the text baselines and the new-user protocol run the same network
and give the same rewards for the same weights and features."""

import math

import pytest
import torch
from toy_users import PROMPT, toy_records

from plus.baselines import PAL, VPL, BaselineConfig, TextEmbedder, build_method, pair_text
from plus.factorization import PalNewUser, ResponseBank, VplNewUser
from plus.user_models import (
    PAL_INITIAL_LOG_SCALE,
    PAL_NUM_PROTOTYPES,
    VPL_LOGVAR_RANGE,
    PalNetwork,
    VplNetwork,
    gaussian_kl,
)

RESPONSES = ["Dogs.", "Cats are calm.", "Birds sing.", "Rabbits."]


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder("tiny-encoder")


def build(method: str, embedder: TextEmbedder):
    config = BaselineConfig(method=method, embedding_model="tiny-encoder", hidden_dim=32, latent_dim=8)
    return build_method(config, embedder=embedder).eval()


def bank_of(embedder: TextEmbedder, record: dict) -> tuple[ResponseBank, torch.Tensor, list[str], list[str]]:
    """A bank whose first rows are the record's context pairs (chosen, rejected, ...) and then RESPONSES to PROMPT,
    the (n, 2) pairs of the context, and the prompts and responses of every row."""
    prompts, responses = [], []
    for pair in record["context_pairs"]:
        prompts += [pair["prompt"]] * 2
        responses += [pair["chosen"], pair["rejected"]]
    prompts += [PROMPT] * len(RESPONSES)
    responses += RESPONSES
    features = embedder.embed([pair_text(p, r) for p, r in zip(prompts, responses, strict=True)])
    bank = ResponseBank(features=features, prompt_features=embedder.embed(prompts))
    pairs = torch.arange(2 * len(record["context_pairs"])).view(-1, 2)
    return bank, pairs, prompts, responses


def test_both_call_sites_share_one_network_and_its_constants():
    config = BaselineConfig(method="pal")
    assert config.num_prototypes == PalNewUser().num_prototypes == PAL_NUM_PROTOTYPES
    assert math.isclose(PalNetwork(4, 8).log_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    assert PAL_INITIAL_LOG_SCALE == pytest.approx(math.log(1 / 0.07))
    network = VplNetwork(4, 8, 3)
    with torch.no_grad():
        network.to_posterior.bias[3:] = torch.tensor([-50.0, 0.0, 50.0])  # log var far outside the range
    _, logvar = network.encode(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))
    assert logvar.min() >= VPL_LOGVAR_RANGE[0] and logvar.max() <= VPL_LOGVAR_RANGE[1]
    assert torch.allclose(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))  # q = prior


def test_protocol_vpl_and_baseline_vpl_give_the_same_rewards(embedder):
    baseline = build("vpl", embedder)
    assert isinstance(baseline, VPL) and isinstance(baseline.network, VplNetwork)
    record = toy_records(1, 0)[0]
    bank, pairs, prompts, responses = bank_of(embedder, record)
    protocol = VplNewUser(hidden=32, latent_dim=8)
    protocol.model = baseline.network
    with torch.no_grad():
        expected = baseline.rewards([record] * len(prompts), prompts, responses)  # (R,)
    got = protocol.user_rewards(bank, pairs, torch.ones(len(pairs)))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_protocol_pal_and_baseline_pal_fit_a_new_user_alike(embedder):
    baseline = build("pal", embedder)
    assert isinstance(baseline, PAL) and isinstance(baseline.network, PalNetwork)
    baseline.prepare(toy_records(4, 0))
    newcomer = {**toy_records(1, 5)[0], "user_id": "stranger"}
    baseline.adapt([newcomer])
    bank, pairs, prompts, responses = bank_of(embedder, newcomer)
    config = baseline.config
    protocol = PalNewUser(
        num_prototypes=config.num_prototypes,
        dim=config.hidden_dim,
        num_user_steps=config.adapt_steps,
        user_learning_rate=config.adapt_learning_rate,
    )
    protocol.model = baseline.network
    with torch.no_grad():
        expected = baseline.rewards([newcomer] * len(prompts), prompts, responses)  # (R,)
    got = protocol.user_rewards(bank, pairs, torch.ones(len(pairs)))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(expected, expected[0])  # the fitted user tells responses apart
