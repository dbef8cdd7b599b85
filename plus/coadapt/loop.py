"""The co-adaptation loop itself (`train_plus`), top to bottom: the rollout batch and the models it trains, the
four stages of one rollout batch (sample, score, update the summarizer, update the reward model), then the loop.
The algorithm, and where it departs from the paper: `plus.coadapt`."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from plus.artifacts import MetricsWriter, write_json
from plus.coadapt.checkpoint import (
    CHECKPOINT_DIR,
    checkpoint_to_resume,
    cut_log_after,
    load_checkpoint,
    records_fingerprint,
    save_checkpoint,
)
from plus.coadapt.config import CoadaptConfig
from plus.coadapt.estimators import ESTIMATORS
from plus.losses import (
    bradley_terry_loss,
    entropy_from_logits,
    kl_penalty,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
)
from plus.models import load_causal_lm
from plus.persistence import trainable_state
from plus.prefix import frozen_depth, summary_logits
from plus.reward_model import SummaryRewardModel
from plus.schedules import cosine_schedule
from plus.summarizer import generate_summaries, response_logits, token_logprobs
from plus.train import seed_everything

logger = logging.getLogger(__name__)

RECORD_FIELDS = ("context", "reward_prompt", "chosen", "rejected", "train_prompt", "train_chosen", "train_rejected")
EVAL_FIELDS = ("context", "eval_prompt", "eval_chosen", "eval_rejected")


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
Probe = Callable[[nn.Module, PreTrainedTokenizerBase, nn.Module], dict[str, float]]
"""``probe(policy, tokenizer, reward_model) -> metrics`` of the summarizer and the loop's reward model as they are
(held-out curves)."""


def _checked_rewards(rewards: torch.Tensor, size: int) -> torch.Tensor:
    rewards = torch.as_tensor(rewards, dtype=torch.float32).cpu()
    if rewards.shape != (size,):
        raise ValueError(f"reward_fn returned shape {tuple(rewards.shape)} for {size} summaries; expected ({size},)")
    if not torch.isfinite(rewards).all():
        raise ValueError(f"reward_fn returned non-finite rewards: {rewards.tolist()}")
    return rewards


def _finite(value: torch.Tensor | float, what: str) -> torch.Tensor | float:
    """``value``, or a FloatingPointError naming ``what`` when any entry is NaN or inf (a NaN loss would otherwise
    train every weight to NaN and log ``null``)."""
    values = torch.as_tensor(value).detach().float().flatten()
    if not torch.isfinite(values).all():
        raise FloatingPointError(f"{what} is not finite: {values[:4].tolist()}")
    return value


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
    batch.values = torch.cat(values) * mask if critic is not None else None  # (N, S)
    advantages, batch.returns = ESTIMATORS[config.estimator](scores, batch.kl, mask, batch.values, config)
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
                _finite(policy_loss, "the summarizer's policy loss")
                if critic is not None:
                    _finite(value_loss, "the critic's value loss")
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
                        norm = accelerator.clip_grad_norm_(_trainable(model), config.max_grad_norm)
                        _finite(norm, f"the {name}'s gradient norm")
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
            loss = _finite(bradley_terry_loss(chosen, rejected), "the reward model's loss")
            accelerator.backward(loss * len(micro) / rows)
            if epoch == 0:
                losses.extend([loss.item()] * len(micro))  # a mean over rows, whatever the micro-batches
                correct.extend((chosen > rejected).tolist())
        if config.max_grad_norm > 0:
            norm = accelerator.clip_grad_norm_(_trainable(scorer), config.max_grad_norm)
            _finite(norm, "the reward model's gradient norm")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    return {"reward_model/loss": float(np.mean(losses)), "reward_model/accuracy": float(np.mean(correct))}


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
    False). ``probe(policy, tokenizer, reward_model)`` measures the summarizer and the reward model before the first
    rollout batch, every ``probe_every`` batches and after the last; its rows go to ``probe.jsonl`` with their
    ``step``. ``config.summarizer_start`` holds the summarizer's updates back for that many rollout batches.
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
        steps = num_steps if name == "reward_model" else max(num_steps - config.summarizer_start, 1)
        total = steps * updates_per_step * (config.ppo_epochs if name != "reward_model" else config.reward_epochs)
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
            reward_model = accelerator.unwrap_model(scorer).reward_model
            measured = probe(accelerator.unwrap_model(policy), tokenizer, reward_model)
            probes.write(step, measured | {"perf/probe_seconds": time.perf_counter() - began_probe})

    if start == 0:
        run_probe(0)
    began = time.perf_counter()
    saved = start  # the rollout batch of the last checkpoint on disk (0: none)
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
        try:
            # (3) the summarizer's update.
            if config.train_summarizer and step >= config.summarizer_start:
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
        except FloatingPointError as error:  # before this batch's logs and any checkpoint: nothing good is lost
            kept = f"the checkpoint of rollout batch {saved} in {checkpoint}" if saved else "no checkpoint yet"
            raise FloatingPointError(
                f"PLUS stopped at rollout batch {step + 1}: {error}. Nothing of this batch was written; the last "
                f"good state is {kept}."
            ) from None
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
            saved = done
    if tensorboard is not None:
        tensorboard.close()
    wall = time.perf_counter() - began
    steps_run = max(stop - start, 0)
    if accelerator.is_main_process and stop == num_steps:
        final = output_dir / "final"
        final.mkdir(exist_ok=True)
        for name, module in prepared_modules.items():
            save_file(trainable_state(accelerator.unwrap_model(module)), str(final / f"{name}.safetensors"))
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
