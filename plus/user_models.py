"""The VPL and PAL-B networks, defined once (REFERENCE.md section 4), on frozen features of (prompt, response).

Two adapters use them: the text baselines `plus.baselines.VPL` / `plus.baselines.PAL` (features from a frozen
sentence encoder) and the new-user forms `plus.factorization.protocol.VplNewUser` / `PalNewUser` (features from a
response bank). The adapters only gather features and choose the training budget; the networks, their constants
and the losses live here.

VPL (`VplNetwork`, Poddar et al. 2024; `WEIRDLabUW/vpl_llm`, ``hidden_context/vae_utils.py``): each context pair
[e(x, y_c); e(x, y_r)] -> MLP -> self-attention over the pairs -> mean pool -> (mu, log var); z ~ N(mu, var) in
training, z = mu at evaluation; reward = MLP([e(x, y); z]); loss = BT + w KL(q || N(0, I)) (`vpl_loss`).

PAL-B (`PalNetwork`, Chen et al. 2024; `RamyaLab/pluralistic-alignment`, ``src/pal_rm_b/``): K prototype ideal
points g_k(e(x)) of the prompt; user u's ideal point a_u(x) = sum_k softmax(w_u)_k g_k(e(x)); reward =
min(exp(s), 100) * cosine(a_u(x), f(e(x, y))) with a learned log scale s. A new user learns only w_u
(`fit_mixture_logits`).

Constants, as in the authors' code:

- VPL: pair encoder and decoder are three Linear layers with LeakyReLU(0.2) (``PairEncoder``, ``Decoder``); one
  attention head (``SequenceEncoder``); KL(q || N(0, I)) summed over the latent, averaged over users.
- PAL-B: log scale starts at log(1 / 0.07) and the scale is clamped at 100 (``learner.py``); f and every g_k are
  ``mlp2-gelu`` projectors, three Linear layers with GELU (``connector.py``, ``projector.py``); a training user's
  logits start as N(0, 1) (``userLearner.init_weight``).
- PAL-B: K = 5 prototypes (`PAL_NUM_PROTOTYPES`). The authors set K to the number of user groups of each data set
  (k = 1 or 2 in their configs); 5 covers our largest baseline population (UF-P-4, 4 users) and equals PReF's
  default J = 5, so in the new-user protocol PAL and PReF fit the same number of per-user parameters.

Departures from the authors' code:

- VPL: log var is clamped to [-6, 2] (`VPL_LOGVAR_RANGE`), not [-1, 1] (``VAEModel.forward``). With [-1, 1] the
  posterior std cannot fall below e^-0.5 = 0.61, and on the toy users (``tests/test_baselines.py``, 30 epochs)
  VPL then collapses to BTL (contested accuracy 0.5); -6 lets the posterior sharpen, 2 keeps a sample's std
  below e (no wild samples early in training).
- VPL: the mean is not clamped to [-1, 1] and z is not renormalised to norm sqrt(D) (the KL term keeps the
  posterior near the prior instead; not compared with the authors' clamp here); the pair encoder outputs
  ``hidden_dim`` (not ``latent_dim``); attention is `nn.MultiheadAttention` (an output projection the authors
  lack) with a padding mask, so a batch holds contexts of different lengths; a learned "no answers" token is
  always attended to, so a user with no answers gets a posterior (the new-user protocol starts at 0 answers).
- VPL: the KL weight rises linearly (`plus.baselines.VPL`) or is constant (`VplNewUser`), where the authors use a
  cyclical cosine annealer over 10,000 loss calls with a floor of 0.1: our CPU runs take a tenth of that or
  fewer steps, so the annealer would not finish its first rise; a linear rise over the first half is its
  nearest equivalent.
- PAL-B: one frozen sentence embedding per text instead of the authors' per-token LLM states; a new user's logits
  start at 0 (the uniform mix), not N(0, 1), so its fit is deterministic; projectors have no dropout layers (the
  authors' configs set dropout 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from plus.losses import bradley_terry_loss

VPL_LOGVAR_RANGE: tuple[float, float] = (-6.0, 2.0)
"""VPL: the posterior log-variance is clamped to this range (vpl_llm: [-1, 1]; see the module docstring)."""
VPL_NUM_HEADS: int = 1
"""VPL: attention heads over the context pairs (vpl_llm ``SequenceEncoder``: one)."""
PAL_NUM_PROTOTYPES: int = 5
"""PAL-B: K, the default number of prototype ideal points a user mixes."""
PAL_INITIAL_LOG_SCALE: float = math.log(1 / 0.07)
"""PAL-B: initial log of the cosine's scale (pluralistic-alignment ``learner.py``, CLIP's value)."""
PAL_MAX_SCALE: float = 100.0
"""PAL-B: the scale exp(s) is clamped at this value."""


def mlp(inputs: int, hidden: int, outputs: int, activation: type[nn.Module] = nn.GELU) -> nn.Sequential:
    """Three Linear layers with ``activation`` between them (both authors' MLPs)."""
    return nn.Sequential(
        nn.Linear(inputs, hidden), activation(), nn.Linear(hidden, hidden), activation(), nn.Linear(hidden, outputs)
    )


def _leaky_relu() -> nn.Module:
    return nn.LeakyReLU(0.2)


class VplNetwork(nn.Module):
    """VPL's encoder q(z | context pairs) and reward decoder r(features, z)."""

    def __init__(self, input_dim: int, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.pair_encoder = mlp(2 * input_dim, hidden_dim, hidden_dim, _leaky_relu)
        self.empty = nn.Parameter(torch.zeros(1, 1, hidden_dim))  # the "no answers" token
        self.attention = nn.MultiheadAttention(hidden_dim, num_heads=VPL_NUM_HEADS, batch_first=True)
        self.to_posterior = nn.Linear(hidden_dim, 2 * latent_dim)
        self.decoder = mlp(input_dim + latent_dim, hidden_dim, 1, _leaky_relu)

    def encode(
        self, chosen: torch.Tensor, rejected: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """chosen, rejected (B, N, E) context features, mask (B, N) True = a real pair -> mu, log var (B, D)."""
        tokens = self.pair_encoder(torch.cat([chosen, rejected], dim=-1))  # (B, N, H)
        tokens = torch.cat([self.empty.expand(len(tokens), -1, -1), tokens], dim=1)  # (B, N + 1, H)
        keep = torch.cat([torch.ones(len(mask), 1, dtype=torch.bool, device=mask.device), mask], dim=1)  # (B, N + 1)
        attended, _ = self.attention(tokens, tokens, tokens, key_padding_mask=~keep)  # (B, N + 1, H)
        weights = keep.unsqueeze(-1).to(attended.dtype)  # (B, N + 1, 1)
        pooled = (attended * weights).sum(1) / weights.sum(1)  # (B, H)
        mu, logvar = self.to_posterior(pooled).chunk(2, dim=-1)  # (B, D) each
        return mu, logvar.clamp(*VPL_LOGVAR_RANGE)

    def latent(self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z (B, D): a reparameterised sample in training, the mean at evaluation."""
        if not self.training:
            return mu
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + noise * (0.5 * logvar).exp()

    def reward(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """features (..., E), z (..., D) -> rewards (...)."""
        return self.decoder(torch.cat([features, z], dim=-1)).squeeze(-1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row (B,) of mu, logvar (B, D)."""
    return 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)


def vpl_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, kl_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BT loss of rewards chosen, rejected (any equal shapes) + kl_weight * mean KL of the posteriors (B, D).
    Returns (loss, bt, kl)."""
    bt = bradley_terry_loss(chosen.flatten(), rejected.flatten())
    kl = gaussian_kl(mu, logvar).mean()
    return bt + kl_weight * kl, bt, kl


class PalNetwork(nn.Module):
    """PAL-B's K prototype projections g_k of the prompt, response projection f and scale (users' logits are
    kept by the adapters: both learn one row per training user, see `initial_user_logits`)."""

    def __init__(self, input_dim: int, hidden_dim: int, num_prototypes: int = PAL_NUM_PROTOTYPES) -> None:
        super().__init__()
        self.num_prototypes = num_prototypes
        self.prototypes = nn.ModuleList(mlp(input_dim, hidden_dim, hidden_dim) for _ in range(num_prototypes))
        self.response_projection = mlp(input_dim, hidden_dim, hidden_dim)
        self.log_scale = nn.Parameter(torch.tensor(PAL_INITIAL_LOG_SCALE))

    def features(self, features: torch.Tensor, prompt_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (N, E) of (prompt, response), prompt_features (N, E) -> prototype points (N, K, H) and the
        response projection (N, H)."""
        points = torch.stack([g(prompt_features) for g in self.prototypes], dim=1)  # (N, K, H)
        return points, self.response_projection(features)

    def scale(self) -> torch.Tensor:
        """The cosine's scale min(exp(s), `PAL_MAX_SCALE`)."""
        return self.log_scale.exp().clamp(max=PAL_MAX_SCALE)

    def score(self, logits: torch.Tensor, points: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
        """(N,) rewards from mixture logits (N, K) and `features`' points (N, K, H) and projection (N, H)."""
        return _mixture_reward(self.scale(), logits, points, projected)

    def reward(self, logits: torch.Tensor, features: torch.Tensor, prompt_features: torch.Tensor) -> torch.Tensor:
        """(N,) rewards for mixture logits (N, K), features and prompt_features (N, E)."""
        return self.score(logits, *self.features(features, prompt_features))


def _mixture_reward(
    scale: torch.Tensor, logits: torch.Tensor, points: torch.Tensor, projected: torch.Tensor
) -> torch.Tensor:
    ideal = (logits.softmax(-1).unsqueeze(-1) * points).sum(1)  # (N, H)
    return scale * F.cosine_similarity(ideal, projected, dim=-1)  # (N,)


def initial_user_logits(num_users: int, num_prototypes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(U, K) training users' starting mixture logits, N(0, 1) as the authors' ``init_weight``."""
    return torch.randn(num_users, num_prototypes, generator=generator)


def fit_mixture_logits(
    network: PalNetwork,
    chosen: tuple[torch.Tensor, torch.Tensor],
    rejected: tuple[torch.Tensor, torch.Tensor],
    owner: torch.Tensor,
    num_users: int,
    num_steps: int,
    learning_rate: float,
) -> torch.Tensor:
    """New users' mixture logits (U, K), everything else frozen: Adam from zero logits on the sum over users of
    each user's mean BT loss (so every user gets the same step size). ``chosen`` and ``rejected`` are the
    (features (P, E), prompt_features (P, E)) of the answered pairs, ``owner`` (P,) the user of each pair."""
    with torch.no_grad():  # the prototypes and projections are frozen: compute them once
        points_c, projected_c = network.features(*chosen)
        points_r, projected_r = network.features(*rejected)
        scale = network.scale()
    logits = torch.zeros(num_users, network.num_prototypes, device=owner.device, requires_grad=True)
    counts = torch.bincount(owner, minlength=num_users).float()  # (U,)
    optimizer = torch.optim.Adam([logits], lr=learning_rate)
    for _ in range(num_steps):
        with torch.enable_grad():  # evaluation fits new users under no_grad
            rows = logits[owner]  # (P, K)
            margin = _mixture_reward(scale, rows, points_c, projected_c) - _mixture_reward(
                scale, rows, points_r, projected_r
            )
            loss = (F.softplus(-margin) / counts[owner]).sum()
            optimizer.zero_grad()
            loss.backward()
        optimizer.step()
    return logits.detach()
