"""PLUS co-adaptation: the summarizer (PPO) and the summary-conditioned reward model (Bradley-Terry) trained
together, one rollout batch at a time (REFERENCE.md section 2.1).

The algorithm as implemented (`train_plus`), for each rollout batch of B records:

1. **Sample** one summary z ~ pi_theta(. | context) per record (K per record for RLOO/GRPO), temperature and
   top_p from the config, at most ``max_summary_tokens`` tokens; the summary is the text after the last
   ``##Summary`` marker (`plus.summarizer.parse_summary`). Empty, marker-less and cut-off summaries are scored
   like any other (an empty one is simply an empty summary) and counted in the metrics.
2. **Score** with the reward model as it is BEFORE this batch's update, in eval mode and without gradients:
   R = clip(log sigmoid(r(chosen | z) - r(rejected | z)), -reward_clip, reward_clip) on the summarizer pair
   (``reward_prompt``, ``chosen``, ``rejected``).
3. **Update the summarizer** (skipped when ``train_summarizer`` is False, i.e. PLUS-untrained):
   PPO (default) - token rewards -kl_coef (log pi - log pi_ref) on every summary token (k1), plus R on the
   last one; a critic gives V per token; GAE (gamma, lam); advantages whitened over the rollout; clipped policy
   loss and clipped value loss; ``ppo_epochs`` passes over minibatches of ``train_batch_size``. RLOO/GRPO -
   K summaries per context, sequence reward R - kl_coef sum_t KL_t, leave-one-out (RLOO) or group-standardised
   (GRPO) advantages broadcast to every token, the same clipped surrogate, no critic.
4. **Update the reward model** with the BT loss on the SAME summaries, on the RM update pair (``train_prompt``,
   ``train_chosen``, ``train_rejected``), minibatches of ``train_batch_size`` (skipped when
   ``train_reward_model`` is False: trained summarizer + static reward model).

Where this departs from the paper (and from the public code, which never ran its PPO loop):

- The critic reads the summarizer's own tokens: with ``separate_critic`` (the default, as in OpenRLHF) it is a
  second copy of the summarizer with a scalar value head; without, a value head on the policy's last hidden
  states, detached so the value loss never moves the policy (a cheaper critic for CPU runs).
- Under data parallelism each process samples, scores and whitens its own share of the rollout batch (the
  advantage whitening is per process, not over the global batch); gradients are averaged as usual.
- The policy and critic run with dropout off during PPO (so the rollout and update log-probs agree); the reward
  model trains in train mode and scores in eval mode.
- With LoRA, the reference summarizer is the same network with its adapters switched off (no second copy).
- The PPO policy and value losses are token means per summary, then means over summaries (OpenRLHF v0.6's
  normalisation), so ``micro_batch_size`` sets the memory use only.

How it is computed (``shared_context``, the default; `plus.prefix`): each context is prefilled once and its KV
cache repeated for its K samples, all summaries of a rollout batch are decoded together, and the inputs of the first
trainable block are kept at every context and summary token. The log-prob, reference, critic and update passes then
run only the blocks above the frozen bottom ones (LoRA on the top k blocks: the top k), once per context for the
context part, with logits at the summary positions only. ``shared_context=False`` is the plain reference path (a full
forward of [context, summary] for every row in every pass), kept for the equivalence tests and `plus.bench`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from plus.artifacts import MetricsWriter, write_json, write_text_atomic
from plus.config import check_number
from plus.losses import (
    bradley_terry_loss,
    entropy_from_logits,
    gae_advantages,
    grpo_advantages,
    kl_penalty,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
    rloo_advantages,
    token_rewards,
)
from plus.models import load_causal_lm
from plus.prefix import frozen_depth, summary_logits
from plus.reward_model import RewardModelConfig, SummaryRewardModel
from plus.schedules import cosine_schedule
from plus.summarizer import generate_summaries, response_logits, token_logprobs
from plus.train import seed_everything

logger = logging.getLogger(__name__)

ESTIMATORS = ("ppo", "rloo", "grpo")
RECORD_FIELDS = ("context", "reward_prompt", "chosen", "rejected", "train_prompt", "train_chosen", "train_rejected")
EVAL_FIELDS = ("context", "eval_prompt", "eval_chosen", "eval_rejected")
CHECKPOINT_DIR = "checkpoint"


@dataclass(frozen=True)
class CoadaptConfig:
    """Hyper-parameters of the co-adaptation loop. Defaults are the paper's (REFERENCE.md 2.1)."""

    summarizer_model: str = "Qwen/Qwen2.5-3B-Instruct"
    """Causal chat LM that writes the summaries (anything `plus.models.load_causal_lm` loads)."""
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    """The summary-conditioned reward model (backbone, max length, pooling)."""
    seed: int = 0
    """Seeds python, numpy and torch (each process adds its rank)."""
    num_episodes: int = 1
    """Passes over the training records (the paper: 1)."""
    max_steps: int | None = None
    """Stop after this many rollout batches (None: all episodes)."""
    rollout_batch_size: int = 256
    """Records per rollout batch, over all processes."""
    train_batch_size: int = 128
    """Records per optimizer step (a rollout batch gives rollout / train steps per PPO epoch)."""
    micro_batch_size: int = 8
    """Rows (summaries) per forward pass (scoring, log-probs and gradient accumulation); sets the memory use only:
    losses and gradients do not depend on it."""
    generation_batch_size: int = 64
    """Summaries decoded together (contexts x samples per context) on the shared-context path; larger batches
    amortise the per-step cost of decoding, at the price of KV-cache memory."""
    shared_context: bool = True
    """The fast path (`plus.prefix`): each context is prefilled once for its samples, the summarizer's frozen
    bottom blocks run once per rollout batch, and the log-prob, reference, critic and update passes run only the
    blocks above them, with logits at the summary positions. False: the plain reference path, kept for the
    equivalence tests and the benchmark (transformers' ``generate`` in micro-batches, and a full forward of
    [context, summary] for every row in every pass). Both compute the same numbers up to rounding."""
    max_summary_tokens: int = 256
    """Cap on generated summary tokens."""
    temperature: float = 1.0
    """Sampling temperature of the summaries."""
    top_p: float = 1.0
    """Nucleus-sampling threshold of the summaries."""
    prefill_marker: bool = False
    """Start the assistant turn with ``##Summary`` (help for small models; the paper does not)."""
    summary_prefix: str = ""
    """The summary's first words, written after the marker (needs ``prefill_marker``), e.g. "This user prefers".
    The summary the reward model reads is the prefix and what the summarizer writes after it; the policy is
    trained only on the tokens it wrote. "" (the paper): the summarizer writes the whole summary."""
    estimator: str = "ppo"
    """``ppo`` (learned critic, GAE), ``rloo`` or ``grpo`` (critic-free, ``num_samples`` per context)."""
    num_samples: int = 4
    """Summaries per context for ``rloo`` / ``grpo`` (ignored by ``ppo``, which samples one)."""
    kl_coef: float = 0.01
    """beta of the per-token KL penalty to the frozen reference summarizer (k1 estimator, fixed)."""
    reward_clip: float = 10.0
    """The summarizer's reward R is clipped to [-reward_clip, reward_clip]."""
    gamma: float = 1.0
    """GAE discount."""
    lam: float = 0.95
    """GAE lambda."""
    whiten_advantages: bool = True
    """Whiten the advantages over the (per-process) rollout."""
    policy_clip: float = 0.2
    """PPO ratio clip."""
    value_clip: float = 0.2
    """PPO value clip (around the rollout's values)."""
    ppo_epochs: int = 1
    """Passes of PPO over each rollout batch."""
    reward_epochs: int = 1
    """Passes of the reward model's BT update over each rollout batch's summaries (the paper: 1). More passes let
    a short run give the reward model enough updates; the summarizer's reward still comes from the model before
    the batch's first pass."""
    actor_lr: float = 5e-7
    """Summarizer learning rate."""
    critic_lr: float = 9e-6
    """Critic learning rate."""
    reward_lr: float = 9e-6
    """Reward-model learning rate."""
    adam_betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas (all three optimizers)."""
    weight_decay: float = 0.0
    """AdamW weight decay (all three optimizers)."""
    warmup_ratio: float = 0.03
    """Share of the optimizer steps with a linear warmup before the cosine decay (`plus.schedules`)."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip, per model."""
    separate_critic: bool = True
    """Critic = a copy of the summarizer + value head (True) or a value head on the policy's detached hidden
    states (False, cheaper)."""
    lora: bool = False
    """Train LoRA adapters (peft) on the summarizer (and on a separate critic) instead of every weight."""
    lora_rank: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha (the update is scaled by alpha / rank)."""
    lora_dropout: float = 0.0
    """LoRA dropout (0 keeps rollout and update log-probs equal)."""
    lora_top_layers: int | None = None
    """Put the adapters only on the top k transformer blocks (None: every block). The backward pass then stops
    at block L - k, which makes a summarizer update several times cheaper on a CPU."""
    train_summarizer: bool = True
    """False freezes the summarizer: PLUS-untrained (the reward model trains on its fixed summaries)."""
    train_reward_model: bool = True
    """False freezes the reward model: trained summarizer + static reward model."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every N rollout batches (0: only at the end)."""

    def __post_init__(self) -> None:
        positive = (
            "num_episodes",
            "rollout_batch_size",
            "train_batch_size",
            "micro_batch_size",
            "generation_batch_size",
            "max_summary_tokens",
            "ppo_epochs",
            "reward_epochs",
            "lora_rank",
            "lora_alpha",
        )
        for name in positive:
            check_number(self, name, 1, integer=True)
        check_number(self, "seed", 0, integer=True)
        if self.max_steps is not None:
            check_number(self, "max_steps", 1, integer=True)
        if self.lora_top_layers is not None:
            check_number(self, "lora_top_layers", 1, integer=True)
        check_number(self, "num_samples", 1, integer=True)
        check_number(self, "checkpoint_every", 0, integer=True)
        if self.rollout_batch_size % self.train_batch_size:
            raise ValueError(
                f"CoadaptConfig.rollout_batch_size ({self.rollout_batch_size}) must be a multiple of "
                f"train_batch_size ({self.train_batch_size})"
            )
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"CoadaptConfig.estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.estimator != "ppo" and self.num_samples < 2:
            raise ValueError(f"CoadaptConfig.num_samples must be >= 2 for {self.estimator}, got {self.num_samples}")
        for name in ("kl_coef", "reward_clip", "policy_clip", "value_clip", "max_grad_norm", "weight_decay"):
            check_number(self, name, 0)
        for name in ("actor_lr", "critic_lr", "reward_lr", "temperature"):
            check_number(self, name, 0, above=True)
        for name in ("gamma", "lam", "top_p", "warmup_ratio", "lora_dropout"):
            check_number(self, name, 0, 1)
        betas = self.adam_betas
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"CoadaptConfig.adam_betas must be a pair of numbers in [0, 1), got {betas!r}")
        for beta in betas:
            if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta < 1:
                raise ValueError(f"CoadaptConfig.adam_betas must be a pair of numbers in [0, 1), got {betas!r}")
        if not isinstance(self.summarizer_model, str) or not self.summarizer_model.strip():
            raise ValueError(f"CoadaptConfig.summarizer_model must name a model, got {self.summarizer_model!r}")
        if self.summary_prefix and not self.prefill_marker:
            raise ValueError(f"CoadaptConfig.summary_prefix={self.summary_prefix!r} needs prefill_marker=True")

    @property
    def samples_per_context(self) -> int:
        return 1 if self.estimator == "ppo" else self.num_samples

    @classmethod
    def from_dict(cls, payload: dict) -> CoadaptConfig:
        """The config `asdict` wrote (``reward_model`` as a dict, ``adam_betas`` as a list)."""
        payload = dict(payload)
        payload["reward_model"] = RewardModelConfig(**payload["reward_model"])
        payload["adam_betas"] = tuple(payload["adam_betas"])
        return cls(**payload)


def coadapt_config(profile_name: str, **changes: Any) -> CoadaptConfig:
    """The loop at a profile's scale (`plus.config.PROFILES`: models, summary cap, reward-model input cap), then
    ``changes``.

    - smoke: the tiny models, every block trained, one rollout batch of 8 contexts, lr 1e-3: checks that it runs;
    - cpu: sized for a 2-core laptop. SmolLM2-135M-Instruct with LoRA (rank 16) on its top 8 blocks at lr 1e-3;
      RLOO with 4 summaries per context (no critic to warm up in a run of a few hundred batches); temperature 0.7
      (SmolLM2-135M writes noise at 1.0); the assistant turn prefilled with the marker and "This user prefers
      responses about" (left to start on its own it rarely writes about the user); 24 summary tokens after it;
      8 contexts per rollout batch; the MiniLM reward model with its top 4 blocks trained at lr 1e-3 (the
      reward-model benchmark's setting, `plus.evaluation.benchmark_config`) and 4 passes per rollout batch;
    - gpu: the paper's (the `CoadaptConfig` defaults: PPO with a separate critic, full fine-tuning, actor lr
      5e-7, rollout 256 / train 128, temperature 1, no prefix) with the profile's models and summary cap."""
    from plus.config import get_profile

    profile = get_profile(profile_name)
    reward_model = RewardModelConfig(backbone=profile.reward_model, max_length=profile.max_length)
    config = CoadaptConfig(
        summarizer_model=profile.summarizer_model,
        reward_model=reward_model,
        max_summary_tokens=profile.max_summary_tokens,
    )
    if profile.name in ("smoke", "cpu"):
        cpu = profile.name == "cpu"
        config = replace(
            config,
            reward_model=replace(reward_model, num_trainable_layers=4 if cpu else None),
            rollout_batch_size=8,
            train_batch_size=8,
            max_steps=None if cpu else 1,
            max_summary_tokens=24 if cpu else profile.max_summary_tokens,
            estimator="rloo",
            num_samples=4,
            temperature=0.7,
            prefill_marker=True,
            summary_prefix="This user prefers responses about",
            lora=True,
            lora_top_layers=8 if cpu else None,
            separate_critic=False,
            actor_lr=1e-3,
            critic_lr=1e-3,
            reward_lr=1e-3,
            reward_epochs=4,
        )
    return replace(config, **changes)


@dataclass
class RolloutBatch:
    """One rollout: N = B records x K samples each (K = 1 for PPO), Q prompt tokens, S summary tokens."""

    record_index: list[int]
    """(N,) which record of the batch each sample summarises (samples of one record are consecutive)."""
    summaries: list[str]
    """(N,) parsed summary texts, what the reward model reads."""
    statuses: list[str]
    """(N,) ``ok``, ``empty``, ``no_marker`` or ``truncated`` (`plus.summarizer.ParsedSummary.status`)."""
    query_ids: torch.Tensor  # (N, Q) left-padded summarizer prompts
    query_mask: torch.Tensor  # (N, Q)
    response_ids: torch.Tensor  # (N, S) right-padded summary tokens
    response_mask: torch.Tensor  # (N, S)
    scores: torch.Tensor  # (N,) R = clipped log sigmoid(r(chosen | z) - r(rejected | z)), RM before its update
    margins: torch.Tensor  # (N,) r(chosen | z) - r(rejected | z), same reward model
    logprobs: torch.Tensor | None = None  # (N, S) log pi_old of the summary tokens (None: summarizer frozen)
    ref_logprobs: torch.Tensor | None = None  # (N, S) log pi_ref
    entropy: torch.Tensor | None = None  # (N, S) entropy of pi_old at each summary position
    values: torch.Tensor | None = None  # (N, S) critic values V_old (PPO only)
    advantages: torch.Tensor | None = None  # (N, S)
    returns: torch.Tensor | None = None  # (N, S) GAE returns, the critic's targets (PPO only)
    kl: torch.Tensor | None = None  # (N, S) per-token k1 KL to the reference
    # Prefix states (shared-context path with a trained summarizer; None on the plain path), `plus.prefix`:
    context_states: torch.Tensor | None = None  # (B, Q, H) input of block ``split`` at each record's context
    context_mask: torch.Tensor | None = None  # (B, Q) left-padded; rows: the distinct records of record_index
    summary_states: torch.Tensor | None = None  # (N, S - 1, H) the same at summary tokens 0 .. S-2
    split: int | None = None  # the first block the passes run (None: the states are token ids, (B, Q), (N, S - 1))

    def __len__(self) -> int:
        return len(self.summaries)

    def select(self, rows: Sequence[int]) -> RolloutBatch:
        """The rows ``rows``, with all-padding columns trimmed (shorter forward passes). With prefix states, the
        contexts kept are those of the rows, once per run of consecutive rows of one record."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        query_keep = self.query_mask[index].any(0).nonzero()
        first = int(query_keep[0]) if len(query_keep) else 0
        width = max(int(self.response_mask[index].sum(1).max()), 1)
        picked: dict[str, Any] = {}
        if self.context_states is not None:
            contexts = torch.unique_consecutive(torch.as_tensor([self.record_index[i] for i in rows]))
            context_mask = self.context_mask[contexts]
            context_keep = context_mask.any(0).nonzero()
            start = int(context_keep[0]) if len(context_keep) else 0
            picked["context_states"] = self.context_states[contexts][:, start:]
            picked["context_mask"] = context_mask[:, start:]
            picked["summary_states"] = self.summary_states[index, : width - 1]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in picked:
                continue
            if isinstance(value, list):
                picked[f.name] = [value[i] for i in rows]
            elif not torch.is_tensor(value) or value.dim() == 1:
                picked[f.name] = value[index] if torch.is_tensor(value) else value
            elif f.name.startswith("query"):
                picked[f.name] = value[index, first:]
            else:
                picked[f.name] = value[index, :width]
        return RolloutBatch(**picked)


class ValueModel(nn.Module):
    """The critic: a scalar head on the last hidden state of each summary token.

    ``body`` is a causal LM (a separate copy of the summarizer) or None: then `forward` takes the policy's hidden
    states, detached, so the value loss trains the head only."""

    def __init__(self, hidden_size: int, body: PreTrainedModel | None = None) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.head.weight)  # V = 0 at the start: the first advantages are the rewards-to-go
        nn.init.zeros_(self.head.bias)

    def forward(self, batch: RolloutBatch, policy_hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Values (N, S) of the summary tokens of ``batch``."""
        if self.body is None:
            hidden = policy_hidden.detach()  # (N, S, H)
        else:
            _, hidden = summary_forward(self.body, batch, self.head.weight.device, output_hidden_states=True)
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float()  # (N, S)


class RewardScorer(nn.Module):
    """Puts a reward model's ``score(summaries, prompts, responses)`` behind ``forward``, so that data-parallel
    wrappers (DDP, FSDP) see the call and synchronise its gradients."""

    def __init__(self, reward_model: nn.Module) -> None:
        super().__init__()
        self.reward_model = reward_model

    def forward(self, summaries: list[str | None], prompts: list[str], responses: list[str]) -> torch.Tensor:
        return self.reward_model.score(summaries, prompts, responses)  # (B,)


@dataclass
class CoadaptResult:
    """What `train_plus` returns (and writes under ``output_dir``)."""

    output_dir: Path
    num_steps: int
    """Rollout batches done in total (including those before a resume)."""
    wall_seconds: float
    """Wall time of this call (training only; a resumed run counts only its own part)."""
    seconds_per_step: float
    """Mean wall time of one rollout batch in this call."""
    metrics_path: Path
    policy: PreTrainedModel = field(repr=False)
    tokenizer: PreTrainedTokenizerBase = field(repr=False)
    reward_model: nn.Module = field(repr=False)


# --- building the models -------------------------------------------------------------------------------------


def _with_lora(model: PreTrainedModel, config: CoadaptConfig) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    layers, targets = None, "all-linear"
    if config.lora_top_layers is not None:
        depth = model.config.num_hidden_layers
        if config.lora_top_layers > depth:
            raise ValueError(
                f"CoadaptConfig.lora_top_layers={config.lora_top_layers} exceeds the model's {depth} blocks"
            )
        layers = list(range(depth - config.lora_top_layers, depth))
        # peft takes a block filter only with named targets: every linear layer's name except the output head's.
        output = model.get_output_embeddings()
        targets = sorted(
            {name.split(".")[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not output}
        )
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def build_summarizer(
    config: CoadaptConfig, device: torch.device
) -> tuple[nn.Module, nn.Module | None, PreTrainedTokenizerBase]:
    """The policy (LoRA-wrapped if ``config.lora``), a frozen reference copy (None with LoRA: the reference is
    the policy with its adapters off, or when the summarizer is frozen) and the left-padded tokenizer."""
    policy, tokenizer = load_causal_lm(config.summarizer_model, device=device)
    if not config.train_summarizer:
        policy.requires_grad_(False)
        return policy, None, tokenizer
    reference = None
    if config.lora:
        policy = _with_lora(policy, config)
    else:
        reference, _ = load_causal_lm(config.summarizer_model, device=device)
        reference.requires_grad_(False).eval()
    return policy, reference, tokenizer


def build_critic(config: CoadaptConfig, policy: nn.Module, device: torch.device) -> ValueModel:
    """The critic (`ValueModel`) the config asks for."""
    width = policy.config.hidden_size
    if not config.separate_critic:
        return ValueModel(width).to(device)
    body, _ = load_causal_lm(config.summarizer_model, device=device)
    if config.lora:
        body = _with_lora(body, config)
    return ValueModel(width, body).to(device)


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def _optimizer(params: list[nn.Parameter], lr: float, config: CoadaptConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=config.adam_betas, weight_decay=config.weight_decay)


# --- the three stages of one rollout batch --------------------------------------------------------------------


RewardFn = Callable[[list[dict], list[str]], torch.Tensor]
"""``reward_fn(records, summaries) -> (N,)``: the summarizer's reward for each summary of its record."""
Probe = Callable[[nn.Module, PreTrainedTokenizerBase], dict[str, float]]
"""``probe(policy, tokenizer) -> metrics`` of the summarizer as it is (held-out curves)."""


def _checked_rewards(rewards: torch.Tensor, size: int) -> torch.Tensor:
    rewards = torch.as_tensor(rewards, dtype=torch.float32).cpu()
    if rewards.shape != (size,):
        raise ValueError(f"reward_fn returned shape {tuple(rewards.shape)} for {size} summaries; expected ({size},)")
    if not torch.isfinite(rewards).all():
        raise ValueError(f"reward_fn returned non-finite rewards: {rewards.tolist()}")
    return rewards


def _check_records(records: Sequence[dict], names: Sequence[str], what: str) -> None:
    for index, record in enumerate(records):
        for name in names:
            value = record.get(name) if isinstance(record, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{what} record {index}: field {name!r} must be a non-empty string, got {value!r}")


def _pair_scores(
    scorer: nn.Module, summaries: list[str | None], prompts: list[str], chosen: list[str], rejected: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """r(chosen | z) and r(rejected | z), (B,) each, in ONE forward call (data-parallel wrappers allow one
    forward per backward)."""
    scores = scorer(summaries + summaries, prompts + prompts, chosen + rejected)  # (2B,)
    return scores[: len(summaries)], scores[len(summaries) :]


@torch.no_grad()
def score_summaries(
    scorer: nn.Module, summaries: list[str | None], records: Sequence[dict], pair: str, micro_batch_size: int
) -> torch.Tensor:
    """Margins r(chosen | z) - r(rejected | z), (B,), of the ``pair`` (``reward``, ``train`` or ``eval``) of each
    record, with the reward model in eval mode and no gradients."""
    prompt_key, chosen_key, rejected_key = {
        "reward": ("reward_prompt", "chosen", "rejected"),
        "train": ("train_prompt", "train_chosen", "train_rejected"),
        "eval": ("eval_prompt", "eval_chosen", "eval_rejected"),
    }[pair]
    was_training = scorer.training
    scorer.eval()
    margins = []
    for start in range(0, len(records), micro_batch_size):
        part = records[start : start + micro_batch_size]
        chosen, rejected = _pair_scores(
            scorer,
            list(summaries[start : start + micro_batch_size]),
            [r[prompt_key] for r in part],
            [r[chosen_key] for r in part],
            [r[rejected_key] for r in part],
        )
        margins.append((chosen - rejected).float().cpu())
    scorer.train(was_training)
    return torch.cat(margins)


@torch.no_grad()
def collect_rollout(
    config: CoadaptConfig,
    policy: nn.Module,
    reference: nn.Module | None,
    critic: ValueModel | None,
    scorer: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[dict],
    accelerator: Accelerator,
    reward_fn: RewardFn | None = None,
) -> tuple[RolloutBatch, dict[str, float]]:
    """Steps 1 and 2 (and the PPO bookkeeping): sample summaries, score them with the reward model as it is now
    (or with ``reward_fn``, see `train_plus`), compute log-probs, reference log-probs, values, token rewards and
    advantages. Returns the batch and timings:
    ``perf/tokens_per_second`` (of the generation), ``perf/generation_seconds``, ``perf/scoring_seconds`` and
    ``perf/logprob_seconds`` (the log-prob, reference and critic passes)."""
    samples = config.samples_per_context
    record_index = [i for i in range(len(records)) for _ in range(samples)]
    unwrapped = accelerator.unwrap_model(policy)
    keep_states = config.shared_context and config.train_summarizer
    split = prefix_split(unwrapped, critic) if keep_states else None
    value_head = critic is not None and critic.body is None  # reads the policy's last hidden states
    generated = generate_summaries(
        unwrapped,
        tokenizer,
        [record["context"] for record in records],
        max_new_tokens=config.max_summary_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        batch_size=config.generation_batch_size if config.shared_context else config.micro_batch_size,
        prefill_marker=config.prefill_marker,
        summary_prefix=config.summary_prefix,
        num_samples=samples,
        keep_states_at=split,
        keep_final_hidden=keep_states and value_head,
        plain=not config.shared_context,
    )
    perf = {"perf/tokens_per_second": generated.tokens_per_second, "perf/generation_seconds": generated.seconds}
    began = time.perf_counter()
    # Step 2: the reward model as it was BEFORE this batch's update (eval mode, no grad).
    repeated = [records[i] for i in record_index]
    if reward_fn is None:
        margins = score_summaries(scorer, generated.texts, repeated, "reward", config.micro_batch_size)  # (N,)
        scores = F.logsigmoid(margins).clamp(-config.reward_clip, config.reward_clip)  # (N,)
    else:  # a known reward (controls): its sign stands in for the margin's
        scores = _checked_rewards(reward_fn(repeated, generated.texts), len(repeated)).clamp(
            -config.reward_clip, config.reward_clip
        )
        margins = scores
    perf["perf/scoring_seconds"] = time.perf_counter() - began
    batch = RolloutBatch(
        record_index=record_index,
        summaries=generated.texts,
        statuses=[s.status for s in generated.summaries],
        query_ids=generated.query_ids,
        query_mask=generated.query_mask,
        response_ids=generated.response_ids,
        response_mask=generated.response_mask,
        scores=scores,
        margins=margins,
    )
    if keep_states and split is not None:
        batch.context_states, batch.context_mask = generated.context_states, generated.context_mask
        batch.summary_states, batch.split = generated.summary_states, split
    elif keep_states:  # trainable embeddings: the passes start from the token ids
        batch.context_states, batch.context_mask = generated.query_ids[::samples], generated.query_mask[::samples]
        batch.summary_states = generated.response_ids[:, :-1]
    if not config.train_summarizer:
        return batch, perf
    began = time.perf_counter()
    device = accelerator.device
    # On the shared-context path the policy's log-probs, entropies (and the hidden states a value head reads) are
    # the generation's own: the sampler computed them from the logits it drew from (equal to a plain pass, tested).
    from_generation = batch.context_states is not None
    logprobs, ref_logprobs, entropy, values = [], [], [], []
    policy.eval()  # dropout off: the update must see the same distribution the rollout sampled from
    for start in range(0, len(batch), config.micro_batch_size):
        stop = min(start + config.micro_batch_size, len(batch))
        part = batch.select(range(start, stop))
        width, part_width = batch.response_ids.shape[1], part.response_ids.shape[1]
        pad = (0, width - part_width)
        response_ids = part.response_ids.to(device)
        if from_generation:
            hidden = generated.final_hidden[start:stop, :part_width].to(device) if value_head else None
        else:
            logits, hidden = summary_forward(policy, part, device, output_hidden_states=True)  # (n, s, V), (n, s, H)
            # The distributions the summaries were sampled from: logits / temperature (as TRL and OpenRLHF do).
            logits = logits / config.temperature
            logprobs.append(F.pad(token_logprobs(logits, response_ids).cpu(), pad))
            entropy.append(F.pad(entropy_from_logits(logits).cpu(), pad))
        if reference is None:  # LoRA: the reference is the base model, adapters off
            with unwrapped.disable_adapter():
                ref_logits, _ = summary_forward(unwrapped, part, device)
        else:
            ref_logits, _ = summary_forward(reference, part, device)
        ref_logprobs.append(F.pad(token_logprobs(ref_logits / config.temperature, response_ids).cpu(), pad))
        if critic is not None:
            values.append(F.pad(critic(part, policy_hidden=hidden).cpu(), pad))
    mask = batch.response_mask.float()  # (N, S)
    batch.logprobs = (generated.logprobs if from_generation else torch.cat(logprobs)) * mask
    batch.ref_logprobs = torch.cat(ref_logprobs) * mask
    batch.entropy = (generated.entropy if from_generation else torch.cat(entropy)) * mask
    batch.kl = kl_penalty(batch.logprobs, batch.ref_logprobs) * mask  # (N, S)
    if config.estimator == "ppo":
        batch.values = torch.cat(values) * mask  # (N, S)
        rewards = token_rewards(scores, batch.kl, mask, config.kl_coef)  # (N, S)
        advantages, batch.returns = gae_advantages(rewards, batch.values, mask, config.gamma, config.lam)
    else:
        sequence_rewards = (scores - config.kl_coef * batch.kl.sum(1)).view(-1, samples)  # (B, K)
        estimate = rloo_advantages if config.estimator == "rloo" else grpo_advantages
        advantages = estimate(sequence_rewards).view(-1, 1) * mask  # (N, S) one advantage per summary
    batch.advantages = masked_whiten(advantages, mask) if config.whiten_advantages else advantages
    perf["perf/logprob_seconds"] = time.perf_counter() - began
    return batch, perf


def prefix_split(policy: nn.Module, critic: ValueModel | None) -> int | None:
    """The first block the shared-context passes run: `plus.prefix.frozen_depth` of the policy and of a separate
    critic (a copy of the summarizer, so the frozen blocks of both are the same weights)."""
    depths = [frozen_depth(policy)]
    if critic is not None and critic.body is not None:
        depths.append(frozen_depth(critic.body))
    return None if None in depths else min(depths)


def summary_forward(
    model: nn.Module, part: RolloutBatch, device: torch.device, output_hidden_states: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (n, s, V) that predict the summary tokens of ``part``, and optionally the last hidden states (n, s, H):
    from the rollout's prefix states when it kept them (`plus.prefix.summary_logits`), else by the plain forward
    of [context, summary] (`plus.summarizer.response_logits`)."""
    if part.context_states is None:
        tensors = [t.to(device) for t in (part.query_ids, part.query_mask, part.response_ids, part.response_mask)]
        return response_logits(model, *tensors, output_hidden_states=output_hidden_states)
    repeats = torch.unique_consecutive(torch.as_tensor(part.record_index), return_counts=True)[1]  # (b,)
    return summary_logits(
        model,
        part.split,
        part.context_states.to(device),
        part.context_mask.to(device),
        part.summary_states.to(device),
        repeats.to(device),
        output_hidden_states,
    )


def _minibatches(size: int, train_batch: int, micro_batch: int) -> list[list[range]]:
    """Minibatches of ``train_batch`` rows, each a list of micro-batches of ``micro_batch`` rows."""
    out = []
    for start in range(0, size, train_batch):
        stop = min(start + train_batch, size)
        out.append([range(s, min(s + micro_batch, stop)) for s in range(start, stop, micro_batch)])
    return out


def update_summarizer(
    config: CoadaptConfig,
    batch: RolloutBatch,
    policy: nn.Module,
    critic: ValueModel | None,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any],
    accelerator: Accelerator,
) -> dict[str, float]:
    """Step 3: ``ppo_epochs`` passes of clipped policy (and value) updates over the rollout's minibatches. Each
    minibatch's loss is the mean of its rows' losses (`plus.losses.ppo_policy_loss`): micro-batches are weighted by
    their row counts, so ``micro_batch_size`` changes neither the gradient nor the reported losses (each a mean
    over minibatches of the minibatch's row-weighted value)."""
    device = accelerator.device
    policy.eval()  # dropout off (see collect_rollout); gradients still flow
    samples = config.samples_per_context
    stats: dict[str, list[float]] = {}
    for _ in range(config.ppo_epochs):
        for minibatch in _minibatches(len(batch), config.train_batch_size * samples, config.micro_batch_size):
            rows = sum(len(micro) for micro in minibatch)
            sums: dict[str, float] = {}
            for micro in minibatch:
                part = batch.select(micro)
                mask = part.response_mask.to(device).float()  # (n, s)
                logits, hidden = summary_forward(policy, part, device, output_hidden_states=critic is not None)
                logprobs = token_logprobs(logits / config.temperature, part.response_ids.to(device))  # (n, s)
                policy_loss, clip_fraction = ppo_policy_loss(
                    logprobs, part.logprobs.to(device), part.advantages.to(device), mask, config.policy_clip
                )
                approx_kl = 0.5 * masked_mean((logprobs.detach() - part.logprobs.to(device)) ** 2, mask)
                loss, values_seen = policy_loss, {}
                if critic is not None:
                    values = critic(part, policy_hidden=hidden)  # (n, s)
                    value_loss, value_clip_fraction = ppo_value_loss(
                        values, part.values.to(device), part.returns.to(device), mask, config.value_clip
                    )
                    loss = loss + value_loss  # disjoint parameters: one backward serves both optimizers
                    values_seen = {"losses/value": value_loss, "losses/value_clipfrac": value_clip_fraction}
                weight = len(micro) / rows
                accelerator.backward(loss * weight)
                seen = {"losses/policy": policy_loss, "losses/policy_clipfrac": clip_fraction}
                for key, value in (seen | values_seen | {"losses/approx_kl": approx_kl}).items():
                    sums[key] = sums.get(key, 0.0) + value.item() * weight
            for key, value in sums.items():
                stats.setdefault(key, []).append(value)
            for name, model in (("actor", policy), ("critic", critic)):
                if name in optimizers:
                    if config.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(_trainable(model), config.max_grad_norm)
                    optimizers[name].step()
                    optimizers[name].zero_grad(set_to_none=True)
                    schedulers[name].step()
    return {key: float(np.mean(values)) for key, values in stats.items()}


def update_reward_model(
    config: CoadaptConfig,
    batch: RolloutBatch,
    records: Sequence[dict],
    scorer: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    accelerator: Accelerator,
) -> dict[str, float]:
    """Step 4: Bradley-Terry updates of the reward model on the rollout's OWN summaries (RM update pair),
    ``reward_epochs`` passes; the loss and accuracy reported are the first pass's. A minibatch's loss is the mean
    over its pairs, whatever ``micro_batch_size`` cuts it into."""
    scorer.train()
    losses, correct = [], []
    minibatches = _minibatches(
        len(batch), config.train_batch_size * config.samples_per_context, config.micro_batch_size
    )
    for epoch, minibatch in ((e, m) for e in range(config.reward_epochs) for m in minibatches):
        rows = sum(len(micro) for micro in minibatch)
        for micro in minibatch:
            part = [records[batch.record_index[i]] for i in micro]
            chosen, rejected = _pair_scores(
                scorer,
                [batch.summaries[i] for i in micro],
                [r["train_prompt"] for r in part],
                [r["train_chosen"] for r in part],
                [r["train_rejected"] for r in part],
            )
            loss = bradley_terry_loss(chosen, rejected)
            accelerator.backward(loss * len(micro) / rows)
            if epoch == 0:
                losses.extend([loss.item()] * len(micro))  # a mean over rows, whatever the micro-batches
                correct.extend((chosen > rejected).tolist())
        if config.max_grad_norm > 0:
            accelerator.clip_grad_norm_(_trainable(scorer), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    return {"reward_model/loss": float(np.mean(losses)), "reward_model/accuracy": float(np.mean(correct))}


# --- checkpoints: safetensors + JSON, no pickles ---------------------------------------------------------------


def _trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters only (LoRA adapters, unfrozen layers): the frozen rest is rebuilt from the config."""
    return {n: p.detach().cpu().contiguous() for n, p in module.named_parameters() if p.requires_grad}


def _load_trainable_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    if set(params) != set(state):
        missing, extra = sorted(set(params) - set(state))[:3], sorted(set(state) - set(params))[:3]
        raise ValueError(f"Checkpoint does not match the model: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].device))


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state dict split into flat tensors (for safetensors) and plain JSON (param groups, steps)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, slot = key.split(".", 1)
        state.setdefault(int(index), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    python = random.getstate()
    return tensors, {"python": [python[0], list(python[1]), python[2]], "numpy": [kind, position, has_gauss, gauss]}


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    kind, position, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(
    directory: Path,
    step: int,
    config: CoadaptConfig,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any],
    accelerator: Accelerator,
    records_digest: str = "",
) -> None:
    """Everything a resume needs: trainable weights, optimizer and scheduler states, RNG states (per process),
    the step, the config and ``records_digest`` (`records_fingerprint`). Weights and optimizer tensors are
    safetensors, the rest JSON.

    Atomic: the files go to a fresh ``<directory>.incoming`` folder (``state.json`` last), which then replaces
    ``directory`` by two renames (the old checkpoint is kept as ``<directory>.previous`` until the new one is
    in place). A process killed at any moment leaves a complete checkpoint that `checkpoint_to_resume` finds."""
    final, directory = directory, directory.with_name(directory.name + ".incoming")
    if accelerator.is_main_process and directory.exists():
        shutil.rmtree(directory)  # a half-written checkpoint of a killed run
    accelerator.wait_for_everyone()
    directory.mkdir(parents=True, exist_ok=True)
    rng_tensors, rng_meta = _rng_state()
    rank = accelerator.process_index
    save_file(rng_tensors, str(directory / f"rng-{rank}.safetensors"))
    write_json(directory / f"rng-{rank}.json", rng_meta)
    if accelerator.is_main_process:
        for name, module in modules.items():
            save_file(_trainable_state(accelerator.unwrap_model(module)), str(directory / f"{name}.safetensors"))
        meta = {"step": step, "config": asdict(config), "records": records_digest, "optimizers": {}, "schedulers": {}}
        for name, optimizer in optimizers.items():
            tensors, meta["optimizers"][name] = _optimizer_tensors(optimizer)
            save_file(tensors, str(directory / f"optimizer-{name}.safetensors"))
        for name, scheduler in schedulers.items():
            meta["schedulers"][name] = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(directory / "state.json", meta)  # written last: its presence marks a complete checkpoint
        previous = final.with_name(final.name + ".previous")
        if previous.exists():
            shutil.rmtree(previous)
        if final.exists():
            final.rename(previous)
        directory.rename(final)
        if previous.exists():
            shutil.rmtree(previous)
    accelerator.wait_for_everyone()


def checkpoint_to_resume(directory: Path) -> Path | None:
    """The newest complete checkpoint (one with ``state.json``) that `save_checkpoint` left at ``directory``,
    ``<directory>.incoming`` (killed before the renames) or ``<directory>.previous`` (killed between them);
    None when there is none."""
    candidates = [directory.with_name(directory.name + suffix) for suffix in ("", ".incoming", ".previous")]
    complete = [c for c in candidates if (c / "state.json").exists()]
    if not complete:
        return None
    return max(complete, key=lambda c: json.loads((c / "state.json").read_text())["step"])


def records_fingerprint(records: Sequence[dict]) -> str:
    """A hash of the training records (their JSON, in order): a resume must train on the same records."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def cut_log_after(path: Path, step: int) -> None:
    """Drop the rows of a JSONL log (``metrics.jsonl``, ``rollouts.jsonl``) whose ``step`` is above ``step``:
    what a killed run wrote after its last checkpoint, which the resume writes again."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    write_text_atomic(path, "".join(line + "\n" for line in kept))


RESUMABLE_CHANGES = ("checkpoint_every",)
"""Config fields a resumed run may change; any other difference means another run (another output_dir)."""


def load_checkpoint(
    directory: Path,
    config: CoadaptConfig,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any],
    accelerator: Accelerator,
    records_digest: str = "",
) -> int:
    """Restore what `save_checkpoint` wrote; returns the number of rollout batches already done. A checkpoint
    written under another config or other records is refused (a clear error; nothing is deleted)."""
    meta = json.loads((directory / "state.json").read_text())
    if meta.get("records", records_digest) != records_digest:
        raise ValueError(
            f"The checkpoint in {directory} was written for other training records; resume with the same records, "
            "or train into a new output_dir (or delete that checkpoint)"
        )
    current = json.loads(json.dumps(asdict(config)))
    changed = sorted(
        name for name in current if name not in RESUMABLE_CHANGES and current[name] != meta["config"].get(name)
    )
    if changed:
        raise ValueError(
            f"The checkpoint in {directory} was written with another config (differs in {', '.join(changed)}); "
            "resume with the same config, or train into a new output_dir (or delete that checkpoint)"
        )
    for name, module in modules.items():
        _load_trainable_state(accelerator.unwrap_model(module), load_file(str(directory / f"{name}.safetensors")))
    for name, optimizer in optimizers.items():
        _load_optimizer(
            optimizer, load_file(str(directory / f"optimizer-{name}.safetensors")), meta["optimizers"][name]
        )
    for name, scheduler in schedulers.items():
        scheduler.load_state_dict({**scheduler.state_dict(), **meta["schedulers"][name]})
    rank = accelerator.process_index
    rng_meta = json.loads((directory / f"rng-{rank}.json").read_text())
    _set_rng_state(load_file(str(directory / f"rng-{rank}.safetensors")), rng_meta)
    return int(meta["step"])


# --- the loop ----------------------------------------------------------------------------------------------------


def _step_records(records: Sequence[dict], step: int, config: CoadaptConfig, accelerator: Accelerator) -> list[dict]:
    """This process's share of rollout batch ``step``: a seeded permutation per episode, cut into batches."""
    per_episode = len(records) // config.rollout_batch_size
    episode, position = divmod(step, per_episode)
    order = np.random.default_rng([config.seed, episode]).permutation(len(records))
    rows = order[position * config.rollout_batch_size : (position + 1) * config.rollout_batch_size]
    share = config.rollout_batch_size // accelerator.num_processes
    mine = rows[accelerator.process_index * share : (accelerator.process_index + 1) * share]
    return [records[int(i)] for i in mine]


def _rollout_metrics(batch: RolloutBatch, config: CoadaptConfig) -> dict[str, float]:
    mask = batch.response_mask.float()
    statuses = np.array(batch.statuses)
    metrics = {
        "summarizer/reward": batch.scores.mean().item(),
        "summarizer/reward_accuracy": (batch.margins > 0).float().mean().item(),
        "summarizer/length": mask.sum(1).mean().item(),
        "summarizer/empty_fraction": float(np.mean(statuses == "empty")),
        "summarizer/no_marker_fraction": float(np.mean(statuses == "no_marker")),
        "summarizer/truncated_fraction": float(np.mean(statuses == "truncated")),
    }
    if batch.kl is not None:
        metrics["summarizer/kl"] = batch.kl.sum(1).mean().item()
        metrics["summarizer/entropy"] = masked_mean(batch.entropy, mask).item()
        metrics["summarizer/non_score_reward"] = -config.kl_coef * metrics["summarizer/kl"]
    if batch.values is not None:
        metrics["summarizer/value_mean"] = masked_mean(batch.values, mask).item()
    return metrics


def train_plus(
    config: CoadaptConfig,
    records: Sequence[dict],
    output_dir: str | Path,
    reward_model: nn.Module | None = None,
    stop_after: int | None = None,
    accelerator: Accelerator | None = None,
    on_rollout: Callable[[int, list[dict], RolloutBatch], None] | None = None,
    progress: bool = True,
    reward_fn: RewardFn | None = None,
    probe: Probe | None = None,
    probe_every: int = 10,
) -> CoadaptResult:
    """Co-adapt the summarizer and the reward model on the ``train`` ``records`` (the module docstring gives the
    algorithm). Resumes from ``output_dir/checkpoint`` when one is there.

    ``reward_model`` defaults to a fresh `SummaryRewardModel` of ``config.reward_model``; any module with a
    differentiable ``score(summaries, prompts, responses) -> (B,)`` works. ``stop_after`` ends this call after
    that many rollout batches in total (a simulated interruption; the run resumes from the checkpoint written
    then). ``on_rollout(step, records, batch)`` sees every rollout batch before the updates (tests, inspection).

    Controls: ``reward_fn(records, summaries)`` replaces the reward model's reward for the summarizer (a known
    reward, e.g. `plus.control.pets_reward`; the reward model still trains unless ``train_reward_model`` is
    False). ``probe(policy, tokenizer)`` measures the summarizer before the first rollout batch, every
    ``probe_every`` batches and after the last; its rows go to ``probe.jsonl`` with their ``step``.
    Writes ``metrics.jsonl``, the sampled summaries with their rewards (``rollouts.jsonl``), TensorBoard events
    under ``tensorboard/``, ``config.json``, the final trainable weights (``final/``) and checkpoints."""
    _check_records(records, RECORD_FIELDS, "train")
    if probe_every < 1:
        raise ValueError(f"probe_every must be a positive number of rollout batches, got {probe_every}")
    if len(records) < config.rollout_batch_size:
        raise ValueError(f"{len(records)} train records is fewer than rollout_batch_size={config.rollout_batch_size}")
    accelerator = accelerator or Accelerator()
    if config.shared_context and accelerator.num_processes > 1:
        raise ValueError(
            "CoadaptConfig.shared_context runs the summarizer's blocks outside its data-parallel wrapper, so it needs "
            f"one process (got {accelerator.num_processes}); set shared_context=False for data-parallel runs"
        )
    if config.rollout_batch_size % accelerator.num_processes or config.train_batch_size % accelerator.num_processes:
        raise ValueError(f"rollout and train batch sizes must divide by the {accelerator.num_processes} processes")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed + accelerator.process_index)
    device = accelerator.device

    policy, reference, tokenizer = build_summarizer(config, device)
    critic = build_critic(config, policy, device) if config.train_summarizer and config.estimator == "ppo" else None
    if reward_model is None:
        reward_model = SummaryRewardModel(config.reward_model, device=device)
    if not config.train_reward_model:
        reward_model.requires_grad_(False)
    scorer = RewardScorer(reward_model).to(device)

    num_steps = (len(records) // config.rollout_batch_size) * config.num_episodes
    if config.max_steps is not None:
        num_steps = min(num_steps, config.max_steps)
    updates_per_step = config.rollout_batch_size // config.train_batch_size
    modules: dict[str, nn.Module] = {}
    optimizers: dict[str, torch.optim.Optimizer] = {}
    if config.train_summarizer:
        modules["actor"] = policy
        optimizers["actor"] = _optimizer(_trainable(policy), config.actor_lr, config)
        if critic is not None:
            modules["critic"] = critic
            optimizers["critic"] = _optimizer(_trainable(critic), config.critic_lr, config)
    if config.train_reward_model:
        modules["reward_model"] = scorer
        optimizers["reward_model"] = _optimizer(_trainable(scorer), config.reward_lr, config)
    schedulers = {}
    for name, optimizer in optimizers.items():
        total = num_steps * updates_per_step * (config.ppo_epochs if name != "reward_model" else config.reward_epochs)
        schedulers[name] = cosine_schedule(optimizer, total, math.ceil(config.warmup_ratio * total))

    names = list(modules)
    objects = [modules[n] for n in names] + [optimizers[n] for n in names]
    prepared = accelerator.prepare(*objects) if objects else ()
    prepared_modules = dict(zip(names, prepared[: len(names)], strict=True))
    optimizers = dict(zip(names, prepared[len(names) :], strict=True))
    policy = prepared_modules.get("actor", policy)
    critic = prepared_modules.get("critic", critic)
    scorer = prepared_modules.get("reward_model", scorer)

    checkpoint = output_dir / CHECKPOINT_DIR
    digest = records_fingerprint(records)
    start = 0
    found = checkpoint_to_resume(checkpoint)
    if found is not None:
        start = load_checkpoint(found, config, prepared_modules, optimizers, schedulers, accelerator, digest)
        logger.info("Resumed from %s at step %d", found, start)
    if accelerator.is_main_process:  # rows a killed run logged after its last checkpoint are written again
        for log in ("metrics.jsonl", "rollouts.jsonl", "probe.jsonl"):
            cut_log_after(output_dir / log, start)
    if accelerator.is_main_process:
        write_json(output_dir / "config.json", asdict(config))
    writer = MetricsWriter(output_dir / "metrics.jsonl") if accelerator.is_main_process else None
    tensorboard = None
    if accelerator.is_main_process:
        from torch.utils.tensorboard import SummaryWriter

        tensorboard = SummaryWriter(str(output_dir / "tensorboard"))

    stop = num_steps if stop_after is None else min(stop_after, num_steps)
    probes = MetricsWriter(output_dir / "probe.jsonl") if probe is not None and accelerator.is_main_process else None

    def run_probe(step: int) -> None:
        if probes is not None:
            began_probe = time.perf_counter()
            measured = probe(accelerator.unwrap_model(policy), tokenizer)
            probes.write(step, measured | {"perf/probe_seconds": time.perf_counter() - began_probe})

    if start == 0:
        run_probe(0)
    began = time.perf_counter()
    bar = tqdm(range(start, stop), desc="PLUS", disable=not (progress and accelerator.is_main_process))
    for step in bar:
        step_began = time.perf_counter()
        batch_records = _step_records(records, step, config, accelerator)
        # (1) sample summaries; (2) score them with the reward model BEFORE its update.
        batch, perf = collect_rollout(
            config, policy, reference, critic, scorer, tokenizer, batch_records, accelerator, reward_fn
        )
        if on_rollout is not None:
            on_rollout(step, batch_records, batch)
        metrics = _rollout_metrics(batch, config)
        metrics |= perf
        # (3) the summarizer's update.
        if config.train_summarizer:
            began_update = time.perf_counter()
            metrics |= update_summarizer(config, batch, policy, critic, optimizers, schedulers, accelerator)
            metrics["perf/summarizer_update_seconds"] = time.perf_counter() - began_update
        # (4) the reward model's update on the SAME summaries.
        began_update = time.perf_counter()
        if config.train_reward_model:
            metrics |= update_reward_model(
                config,
                batch,
                batch_records,
                scorer,
                optimizers["reward_model"],
                schedulers["reward_model"],
                accelerator,
            )
        for name, scheduler in schedulers.items():
            metrics[f"lr/{name}"] = scheduler.get_last_lr()[0]
        metrics["perf/reward_update_seconds"] = time.perf_counter() - began_update
        metrics["perf/seconds_per_step"] = time.perf_counter() - step_began
        if writer is not None:
            writer.write(step + 1, metrics)
            with (output_dir / "rollouts.jsonl").open("a") as handle:  # the summaries every step sampled
                for i, summary in enumerate(batch.summaries):
                    record = batch_records[batch.record_index[i]]
                    row = {"step": step + 1, "user_id": record.get("user_id"), "summary": summary}
                    row |= {"status": batch.statuses[i], "reward": batch.scores[i].item()}
                    handle.write(json.dumps(row) + "\n")
            for key, value in metrics.items():
                tensorboard.add_scalar(key, value, step + 1)
        bar.set_postfix(reward=f"{metrics['summarizer/reward']:.3f}", rm_acc=metrics.get("reward_model/accuracy"))
        done = step + 1
        if done % probe_every == 0 or done == num_steps:
            run_probe(done)
        if done == stop or (config.checkpoint_every and done % config.checkpoint_every == 0):
            save_checkpoint(checkpoint, done, config, prepared_modules, optimizers, schedulers, accelerator, digest)
    if tensorboard is not None:
        tensorboard.close()
    wall = time.perf_counter() - began
    steps_run = max(stop - start, 0)
    if accelerator.is_main_process and stop == num_steps:
        final = output_dir / "final"
        final.mkdir(exist_ok=True)
        for name, module in prepared_modules.items():
            save_file(_trainable_state(accelerator.unwrap_model(module)), str(final / f"{name}.safetensors"))
        write_json(final / "config.json", asdict(config))
    accelerator.wait_for_everyone()
    return CoadaptResult(
        output_dir=output_dir,
        num_steps=stop,
        wall_seconds=wall,
        seconds_per_step=wall / steps_run if steps_run else float("nan"),
        metrics_path=output_dir / "metrics.jsonl",
        policy=accelerator.unwrap_model(policy),
        tokenizer=tokenizer,
        reward_model=accelerator.unwrap_model(scorer).reward_model,
    )


# --- evaluation -----------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_plus(
    policy: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    reward_model: nn.Module,
    records: Sequence[dict],
    max_summary_tokens: int,
    output_dir: str | Path | None = None,
    modes: Sequence[str] = ("sampled", "greedy"),
    batch_size: int = 8,
    prefill_marker: bool = False,
    seed: int = 0,
    name: str = "eval",
    temperature: float = 1.0,
    summary_prefix: str = "",
) -> dict[str, float]:
    """Pairwise accuracy 1[r(eval_chosen | z) > r(eval_rejected | z)] per split and summary mode (``sampled`` at
    ``temperature``: use the training run's, ``greedy``), keys ``<mode>/<split>``; also the share of bad
    summaries. With ``output_dir``, writes ``summaries-<name>-<mode>.jsonl`` (one line per record) and
    ``accuracy-<name>.json`` there."""
    _check_records(records, EVAL_FIELDS, "eval")
    scorer = RewardScorer(reward_model)
    splits = np.array([record.get("split", "all") for record in records])
    results: dict[str, float] = {}
    for mode in modes:
        if mode not in ("sampled", "greedy"):
            raise ValueError(f"Unknown evaluation mode {mode!r}; use 'sampled' or 'greedy'")
        torch.manual_seed(seed)
        generated = generate_summaries(
            policy,
            tokenizer,
            [r["context"] for r in records],
            max_new_tokens=max_summary_tokens,
            do_sample=mode == "sampled",
            temperature=temperature,
            batch_size=batch_size,
            prefill_marker=prefill_marker,
            summary_prefix=summary_prefix,
        )
        margins = score_summaries(scorer, generated.texts, records, "eval", batch_size)  # (B,)
        correct = (margins > 0).numpy()
        for split in sorted(set(splits)):
            results[f"{mode}/{split}"] = float(correct[splits == split].mean())
        statuses = np.array([s.status for s in generated.summaries])
        results[f"{mode}/bad_summary_fraction"] = float(np.mean(statuses != "ok"))
        if output_dir is not None:
            path = Path(output_dir) / f"summaries-{name}-{mode}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w") as handle:
                for record, summary, margin in zip(records, generated.summaries, margins.tolist(), strict=True):
                    row = {
                        "user_id": record.get("user_id"),
                        "split": record.get("split"),
                        "summary": summary.text,
                        "status": summary.status,
                        "margin": margin,
                        "correct": margin > 0,
                    }
                    handle.write(json.dumps(row) + "\n")
    if output_dir is not None:
        write_json(Path(output_dir) / f"accuracy-{name}.json", results)
    return results
