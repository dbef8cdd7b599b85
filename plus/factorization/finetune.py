"""phi with the top blocks of its sentence encoder fine-tuned, against the frozen-feature head.

The paper fine-tunes its whole backbone for phi; `plus.factorization.core` trains only a head on frozen features
(what a CPU affords). This module measures what that costs: `FinetunedPref` first fits PReF as usual (SVD warm
start, regularised BT fit of the head and the training users' lambdas), then keeps training the same loss with the
top ``num_blocks`` blocks of the encoder trainable, starting from the frozen solution. The blocks below are frozen,
so their outputs are computed once per text (`EncoderStates`) and every epoch runs only the top blocks.

The fine-tuned features are standardised with the frozen features' mean and std over the bank (fixed constants),
so at step 0 the model is exactly the frozen-head fit, and the new user's protocol afterwards is unchanged.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from plus.factorization.core import PrefModel, observed_entries, pref_loss
from plus.factorization.protocol import PrefNewUser, ResponseBank, TrainingPopulation
from plus.models import load_backbone

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    """How phi's encoder is fine-tuned after the frozen-head fit."""

    num_blocks: int = 1
    """Top transformer blocks of the encoder made trainable."""
    num_epochs: int = 6
    """Passes over the training pairs (minibatches of ``pairs_per_step`` pairs and all their answers)."""
    learning_rate: float = 3e-6
    """Adam learning rate of the blocks, the head and the training users' lambdas. The frozen fit is already near
    its optimum: on Attributes (seed 0, cpu sizes) 1e-5 and above first throw the training loss several times
    higher than where it starts (the features are standardised, so small shifts in low-variance directions are
    amplified) and end with a lower new-user AUC; 3e-6 lowers the loss from the start."""
    pairs_per_step: int = 64
    """Pairs per optimiser step."""

    def __post_init__(self) -> None:
        from plus.config import check_number

        for name in ("num_blocks", "num_epochs", "pairs_per_step"):
            check_number(self, name, 1, integer=True)
        check_number(self, "learning_rate", 0, above=True)


class EncoderStates:
    """The inputs of an encoder's top ``num_blocks`` blocks for texts, computed once per text (the frozen bottom
    in eval mode), and the top blocks' mean-pooled output for any of those texts."""

    def __init__(self, model_name: str, num_blocks: int, max_length: int, batch_size: int = 64) -> None:
        from plus.reward_model import _blocks

        self.model, self.tokenizer = load_backbone(model_name, device="cpu", dtype=torch.float32)
        self.model.eval().requires_grad_(False)
        blocks = _blocks(self.model)
        if not 1 <= num_blocks <= len(blocks):
            raise ValueError(f"num_blocks must be in [1, {len(blocks)}] for {model_name!r}, got {num_blocks}")
        self.blocks = blocks[len(blocks) - num_blocks :]
        self.num_blocks, self.max_length, self.batch_size = num_blocks, max_length, batch_size
        self.states: dict[str, torch.Tensor] = {}  # text -> (T, H)

    @torch.no_grad()
    def add(self, texts: list[str]) -> None:
        """Compute and keep the states of the texts not seen yet (batched by length, so little padding)."""
        missing = sorted({t for t in texts if t not in self.states}, key=len)
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            batch = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            hidden = self.model(**batch, output_hidden_states=True).hidden_states[-(self.num_blocks + 1)]
            for text, states, mask in zip(chunk, hidden, batch["attention_mask"], strict=True):
                self.states[text] = states[: int(mask.sum())].clone()

    def trainable_copy(self) -> nn.ModuleList:
        """A fresh copy of the top blocks, trainable and without dropout (every fit starts from the encoder)."""
        blocks = copy.deepcopy(self.blocks).eval()
        return blocks.requires_grad_(True)

    def pooled(self, blocks: nn.ModuleList, texts: list[str]) -> torch.Tensor:
        """Mean-pooled outputs (N, H) of ``blocks`` on the kept states of ``texts``; differentiable in ``blocks``."""
        self.add(texts)
        order = sorted(range(len(texts)), key=lambda i: len(self.states[texts[i]]))
        out: list[torch.Tensor | None] = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            states = [self.states[texts[i]] for i in rows]
            lengths = torch.tensor([len(s) for s in states])
            hidden = nn.utils.rnn.pad_sequence(states, batch_first=True)  # (B, T, H)
            mask = (torch.arange(hidden.shape[1])[None] < lengths[:, None]).long()  # (B, T)
            attention = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)
            for block in blocks:
                hidden = block(hidden, attention)
            weights = mask[..., None].to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1)  # (B, H)
            for row, i in enumerate(rows):
                out[i] = pooled[row]
        return torch.stack(out)  # type: ignore[arg-type]


def finetune_pref(
    model: PrefModel,
    population: TrainingPopulation,
    encoder: EncoderStates,
    texts: list[str],
    config: FinetuneConfig,
    seed: int = 0,
) -> tuple[PrefModel, torch.Tensor, list[dict[str, float]]]:
    """Keep training a fitted PReF ``model`` (head and training users' lambdas) with the encoder's top blocks
    trainable, on the same loss (`plus.factorization.core.pref_loss`). ``texts`` (R) are phi's inputs, the rows of
    the bank. Returns the new model, the fine-tuned standardised features (R, H) and its history: the loss over
    every training answer before (epoch -1) and after (epoch ``num_epochs``), and each epoch's minibatch mean."""
    blocks = encoder.trainable_copy()
    with torch.no_grad():
        raw = encoder.pooled(blocks, texts)  # (R, H): the frozen features, before any step
    mean, std = raw.mean(0), raw.std(0).clamp_min(1e-6)
    basis = copy.deepcopy(model.basis).train()
    user_weights = nn.Parameter(model.user_weights.clone())
    pair_idx, user_idx, targets = observed_entries(population.labels)
    # One small learning rate for everything: PReF's own (3e-3) on the converged head and lambdas, with a fresh
    # Adam state on minibatches, throws the fit far from where it starts before the blocks can help.
    optimizer = torch.optim.Adam([*blocks.parameters(), *basis.parameters(), user_weights], lr=config.learning_rate)
    generator = torch.Generator().manual_seed(seed)

    def full_loss(features: torch.Tensor) -> float:
        """The loss over every training answer with phi on ``features`` (R, H)."""
        with torch.no_grad():
            phi = basis(features)
            diffs = phi[population.pairs[pair_idx, 0]] - phi[population.pairs[pair_idx, 1]]
            return pref_loss(user_weights[user_idx], diffs, targets, model.config.l2_weight)[0].item()

    history = [{"epoch": -1, "losses/pref_full": full_loss((raw - mean) / std)}]
    num_pairs = population.pairs.shape[0]
    for epoch in range(config.num_epochs):
        losses = []
        for chunk in torch.randperm(num_pairs, generator=generator).split(config.pairs_per_step):
            selected = torch.isin(pair_idx, chunk)
            if not selected.any():
                continue
            rows = population.pairs[chunk].flatten().unique()  # response indices this step reads
            position = {int(r): i for i, r in enumerate(rows)}
            phi = basis((encoder.pooled(blocks, [texts[int(r)] for r in rows]) - mean) / std)  # (n, J)
            pairs = population.pairs[pair_idx[selected]]  # (N, 2)
            first = torch.tensor([position[int(r)] for r in pairs[:, 0]])
            second = torch.tensor([position[int(r)] for r in pairs[:, 1]])
            loss, _ = pref_loss(
                user_weights[user_idx[selected]], phi[first] - phi[second], targets[selected], model.config.l2_weight
            )
            if not torch.isfinite(loss):
                raise FloatingPointError(f"finetune_pref: the loss is not finite at epoch {epoch}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        history.append({"epoch": epoch, "losses/pref": sum(losses) / len(losses)})
        logger.info("fine-tuning phi: epoch %d, loss %.4f", epoch, history[-1]["losses/pref"])
    basis.eval()
    with torch.no_grad():
        features = (encoder.pooled(blocks, texts) - mean) / std
    history.append({"epoch": config.num_epochs, "losses/pref_full": full_loss(features)})
    return PrefModel(basis=basis, user_weights=user_weights.detach(), config=model.config), features, history


@dataclass
class FinetunedPref(PrefNewUser):
    """Active PReF whose phi's top encoder blocks are fine-tuned after the frozen-head fit (`finetune_pref`).
    ``encoder`` holds the bank's texts' states; ``texts`` are phi's inputs, the bank's rows."""

    encoder: EncoderStates | None = None
    texts: list[str] = field(default_factory=list)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def fit(self, bank: ResponseBank, population: TrainingPopulation, seed: int) -> None:
        if self.encoder is None or len(self.texts) != bank.features.shape[0]:
            raise ValueError(f"{self.name}: needs an encoder and one text per bank row ({bank.features.shape[0]})")
        super().fit(bank, population, seed)
        self.model, features, tuned = finetune_pref(
            self.model, population, self.encoder, self.texts, self.finetune, seed
        )
        self.history = [*self.history, *({"finetune_" + key: value for key, value in row.items()} for row in tuned)]
        self.phi = self.model.phi(features)
