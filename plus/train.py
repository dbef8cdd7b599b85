"""The reward-model trainer: one loop for every `plus.baselines.RewardMethod`.

(The PLUS co-adaptation loop, which also trains the summarizer, lives in `plus.coadapt`.)
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from plus.artifacts import MetricsWriter, as_read_back, read_metrics, write_json
from plus.baselines import RewardMethod, save_method
from plus.persistence import (
    STATE,
    cut_log_after,
    incoming_dir,
    load_optimizer,
    load_trainable_state,
    newest_complete,
    optimizer_tensors,
    records_fingerprint,
    rng_state,
    set_rng_state,
    swap_in,
    trainable_state,
    write_manifest,
)
from plus.schedules import cosine_schedule

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of a reward model. Defaults are the PLUS reward model's (REFERENCE.md 2.1)."""

    learning_rate: float = 9e-6
    """AdamW learning rate of the pretrained backbone."""
    head_learning_rate: float = 9e-6
    """AdamW learning rate of newly initialised parameters (scalar heads, the VPL/PAL networks)."""
    num_epochs: int = 1
    """Passes over the training records."""
    batch_size: int = 128
    """Records (preference pairs) per optimisation step."""
    warmup_ratio: float = 0.03
    """Fraction of the steps over which the learning rate rises linearly to its peak; then cosine decay to 0
    (`plus.schedules.cosine_with_warmup`)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold (global L2 norm)."""
    seed: int = 0
    """Seeds Python, NumPy and torch at the start of training and orders the batches."""
    progress_bar: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self) -> None:
        from plus.config import check_number

        for name in ("num_epochs", "batch_size"):
            check_number(self, name, 1, integer=True)
        for name in ("learning_rate", "head_learning_rate", "max_grad_norm"):
            check_number(self, name, 0, above=True)
        check_number(self, "weight_decay", 0)
        check_number(self, "seed", 0, integer=True)
        for name in ("warmup_ratio", "beta1", "beta2"):
            check_number(self, name, 0, 1)
            if getattr(self, name) == 1:
                raise ValueError(f"TrainConfig.{name} must be < 1, got {getattr(self, name)!r}")


@dataclass
class TrainResult:
    """What `train_reward_model` returns."""

    metrics: list[dict]
    """One row per step (the rows of ``metrics.jsonl``)."""
    num_steps: int
    seconds: float
    checkpoint: Path | None
    """Where the final weights were saved (``None`` without an output directory)."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (call it before building a model, so initialisation is reproducible)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy takes 32-bit seeds only
    torch.manual_seed(seed)


RESUME_DIR = "resume"
"""The folder of `train_reward_model`'s mid-run checkpoint, inside its output directory."""


def _resumable_config(config: TrainConfig) -> dict:
    """The config fields a resume must share with the run it continues (the progress bar may differ)."""
    return as_read_back({k: v for k, v in asdict(config).items() if k != "progress_bar"})


def _save_resume(directory: Path, step: int, epoch: int, epoch_rng: torch.Tensor, method, optimizer, scheduler,
                 config: TrainConfig, digest: str) -> None:  # fmt: skip
    """A mid-run checkpoint (`plus.persistence`): weights, optimizer, scheduler, the RNG states, and the batch
    generator's state at the start of the current epoch (so the epoch's order is drawn again on resume)."""
    incoming = incoming_dir(directory)
    save_file(trainable_state(method), str(incoming / "weights.safetensors"))
    tensors, optimizer_meta = optimizer_tensors(optimizer)
    save_file(tensors, str(incoming / "optimizer.safetensors"))
    rng, rng_meta = rng_state()
    save_file({**rng, "epoch_generator": epoch_rng}, str(incoming / "rng.safetensors"))
    scheduler_state = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    meta = {"step": step, "epoch": epoch, "config": _resumable_config(config), "records": digest,
            "optimizer": optimizer_meta, "scheduler": scheduler_state, "rng": rng_meta}  # fmt: skip
    write_json(incoming / STATE, meta)
    write_manifest(incoming)
    swap_in(incoming, directory)


def _load_resume(directory: Path, method, optimizer, scheduler, config: TrainConfig, digest: str):
    """Restore `_save_resume`'s checkpoint; returns (step, epoch, the batch generator's epoch-start state). A
    checkpoint of other records or another config is refused, naming what differs; nothing is deleted."""
    meta = json.loads((directory / STATE).read_text())
    if meta["records"] != digest:
        raise ValueError(
            f"The checkpoint in {directory} was written for other training records; resume with the same records, "
            "or train into a new output_dir (or delete that folder)"
        )
    current = _resumable_config(config)
    changed = sorted(k for k in current if current[k] != meta["config"].get(k))
    if changed:
        raise ValueError(
            f"The checkpoint in {directory} was written with another TrainConfig (differs in {', '.join(changed)}); "
            "resume with the same config, or train into a new output_dir (or delete that folder)"
        )
    load_trainable_state(method, load_file(str(directory / "weights.safetensors")))
    load_optimizer(optimizer, load_file(str(directory / "optimizer.safetensors")), meta["optimizer"])
    scheduler.load_state_dict({**scheduler.state_dict(), **meta["scheduler"]})
    rng = load_file(str(directory / "rng.safetensors"))
    epoch_rng = rng.pop("epoch_generator")
    set_rng_state(rng, meta["rng"])
    return int(meta["step"]), int(meta["epoch"]), epoch_rng


def train_reward_model(
    method: RewardMethod,
    records: Sequence[dict],
    config: TrainConfig,
    output_dir: str | Path | None = None,
    save_checkpoint: bool = True,
    checkpoint_every: int = 0,
) -> TrainResult:
    """Train ``method`` on the train pairs of ``records`` with its own loss (BT for most methods).

    Each epoch visits the records in a seeded random order, in batches of ``batch_size`` (the last batch may be
    smaller). Each step: loss = ``method.loss(batch, progress)``; backward; clip the global gradient norm to
    ``max_grad_norm``; AdamW step (two parameter groups: backbone and new parameters, each with its learning
    rate); cosine-with-warmup schedule step. Metrics per step go to ``output_dir/metrics.jsonl``:

    - ``losses/total``: the loss optimised; method metrics such as ``losses/bt``, ``losses/kl``,
      ``train/accuracy`` (share of the batch's pairs ranked right);
    - ``train/grad_norm``: gradient norm before clipping; ``train/lr``: the backbone group's learning rate.

    The final weights go to ``output_dir/checkpoint`` (safetensors + JSON, `plus.baselines.save_method`)
    unless ``save_checkpoint`` is False.

    **Resuming.** With ``checkpoint_every`` = k > 0 a resumable checkpoint is written to ``output_dir/resume``
    every k steps (`plus.persistence`: atomic, with a manifest). A call that finds one there continues from it, on
    the same records and config (else a clear error), after cutting ``metrics.jsonl`` back to its step: the weights,
    optimizer state and metrics then equal an uninterrupted run's. Without one, ``metrics.jsonl`` is replaced.
    The folder is removed once the run finishes. The same seed gives the same metrics (on the same device and
    thread count)."""
    records = list(records)
    if not records:
        raise ValueError("train_reward_model needs at least one training record")
    if not isinstance(checkpoint_every, int) or isinstance(checkpoint_every, bool) or checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be a non-negative int, got {checkpoint_every!r}")
    seed_everything(config.seed)
    method.prepare(records)
    groups = method.parameter_groups()
    param_groups = [
        {"params": groups["backbone"], "lr": config.learning_rate},
        {"params": groups["head"], "lr": config.head_learning_rate},
    ]
    param_groups = [group for group in param_groups if group["params"]]
    if not param_groups:
        raise ValueError(f"{type(method).__name__} has no trainable parameters")
    optimizer = torch.optim.AdamW(param_groups, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(records) / config.batch_size)
    num_steps = steps_per_epoch * config.num_epochs
    num_warmup = math.ceil(config.warmup_ratio * num_steps)
    scheduler = cosine_schedule(optimizer, num_steps, num_warmup)
    generator = torch.Generator().manual_seed(config.seed)
    writer = MetricsWriter(Path(output_dir) / "metrics.jsonl") if output_dir is not None else None
    resume = Path(output_dir) / RESUME_DIR if output_dir is not None else None
    found = newest_complete(resume) if resume is not None else None
    digest = records_fingerprint(records)
    step, first_epoch, rows = 0, 0, []
    if found is not None:
        step, first_epoch, epoch_rng = _load_resume(found, method, optimizer, scheduler, config, digest)
        generator.set_state(epoch_rng)
        cut_log_after(writer.path, step - 1)
        rows = read_metrics(writer.path) if writer.path.exists() else []
        logger.info("Resuming reward-model training at step %d of %d from %s", step, num_steps, found)
    elif writer is not None and writer.path.exists():
        writer.path.unlink()  # a re-run replaces, never appends to, an earlier run's metrics
    params = [p for group in param_groups for p in group["params"]]
    method.train()
    began = time.perf_counter()
    bar = tqdm(
        total=num_steps,
        initial=step,
        desc=f"train {getattr(method, 'name', type(method).__name__)}",
        disable=not config.progress_bar,
    )
    for epoch in range(first_epoch, config.num_epochs):
        epoch_rng = generator.get_state()
        order = torch.randperm(len(records), generator=generator).tolist()
        for index, start in enumerate(range(0, len(records), config.batch_size)):
            if epoch * steps_per_epoch + index < step:
                continue  # trained before the checkpoint this run resumed from
            batch = [records[i] for i in order[start : start + config.batch_size]]
            loss, metrics = method.loss(batch, progress=step / num_steps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            for what, value in (("loss", loss), ("gradient norm", grad_norm)):
                if not torch.isfinite(value).all():  # before the step: the weights and metrics stay as they were
                    raise FloatingPointError(
                        f"train_reward_model stopped at step {step} of {num_steps}: the {what} is {value.item()}; "
                        "nothing of this step was written and no checkpoint was saved"
                    )
            row = {
                "losses/total": loss.item(),
                **metrics,
                "train/grad_norm": grad_norm.item(),
                "train/lr": optimizer.param_groups[0]["lr"],
            }
            optimizer.step()
            scheduler.step()
            rows.append({"step": step, **row})
            if writer is not None:
                writer.write(step, row)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{row['losses/total']:.3f}")
            if resume is not None and checkpoint_every and step % checkpoint_every == 0 and step < num_steps:
                _save_resume(resume, step, epoch, epoch_rng, method, optimizer, scheduler, config, digest)
    bar.close()
    seconds = time.perf_counter() - began
    method.eval()
    checkpoint = None
    if output_dir is not None and save_checkpoint:
        checkpoint = save_method(method, Path(output_dir) / "checkpoint")
    if resume is not None:
        for leftover in (resume.with_name(resume.name + suffix) for suffix in ("", ".incoming", ".previous")):
            if leftover.exists():
                shutil.rmtree(leftover)  # finished: the final checkpoint supersedes it
    return TrainResult(metrics=rows, num_steps=num_steps, seconds=seconds, checkpoint=checkpoint)
