"""Checkpoints of the co-adaptation loop: trainable weights, optimizer and RNG states as safetensors + JSON (no
pickles), refused on resume when the config or the records differ; logs cut back to the checkpoint's step. The
scheme (atomic folders, manifests, fallback) is `plus.persistence`'s, shared with reward-model training."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn

from plus.artifacts import as_read_back, write_json
from plus.coadapt.config import CoadaptConfig
from plus.persistence import (
    STATE,
    cut_log_after,
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

__all__ = [
    "CHECKPOINT_DIR",
    "RESUMABLE_CHANGES",
    "checkpoint_to_resume",
    "cut_log_after",  # `plus.persistence`'s, re-exported
    "load_checkpoint",
    "load_trained_summarizer",
    "records_fingerprint",  # `plus.persistence`'s, re-exported
    "save_checkpoint",
]

CHECKPOINT_DIR = "checkpoint"


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

    Atomic (`plus.persistence`): the files go to a fresh ``<directory>.incoming`` folder, then a manifest of their
    sizes and hashes, which then replaces ``directory`` by two renames (the old checkpoint is kept as
    ``<directory>.previous`` until the new one is in place). A process killed at any moment leaves a complete
    checkpoint that `checkpoint_to_resume` finds."""
    final, directory = directory, directory.with_name(directory.name + ".incoming")
    if accelerator.is_main_process and directory.exists():
        shutil.rmtree(directory)  # a half-written checkpoint of a killed run
    accelerator.wait_for_everyone()
    directory.mkdir(parents=True, exist_ok=True)
    rng_tensors, rng_meta = rng_state()
    rank = accelerator.process_index
    save_file(rng_tensors, str(directory / f"rng-{rank}.safetensors"))
    write_json(directory / f"rng-{rank}.json", rng_meta)
    if accelerator.is_main_process:
        for name, module in modules.items():
            save_file(trainable_state(accelerator.unwrap_model(module)), str(directory / f"{name}.safetensors"))
        meta = {"step": step, "config": asdict(config), "records": records_digest, "optimizers": {}, "schedulers": {}}
        for name, optimizer in optimizers.items():
            tensors, meta["optimizers"][name] = optimizer_tensors(optimizer)
            save_file(tensors, str(directory / f"optimizer-{name}.safetensors"))
        for name, scheduler in schedulers.items():
            meta["schedulers"][name] = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(directory / STATE, meta)
        write_manifest(directory)  # written last: a manifest that verifies marks a complete checkpoint
        swap_in(directory, final)
    accelerator.wait_for_everyone()


def checkpoint_to_resume(directory: Path) -> Path | None:
    """The newest intact checkpoint that `save_checkpoint` left at ``directory``, ``<directory>.incoming`` (killed
    before the renames) or ``<directory>.previous`` (killed between them); None when there is none; a damaged
    one is skipped with a warning, and an error when nothing intact is left (`plus.persistence.newest_complete`)."""
    return newest_complete(directory)


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
    meta = json.loads((directory / STATE).read_text())
    if meta.get("records", records_digest) != records_digest:
        raise ValueError(
            f"The checkpoint in {directory} was written for other training records; resume with the same records, "
            "or train into a new output_dir (or delete that checkpoint)"
        )
    current = as_read_back(asdict(config))
    defaults = as_read_back(asdict(CoadaptConfig()))  # a field added since the checkpoint has its default
    changed = sorted(
        name
        for name in current
        if name not in RESUMABLE_CHANGES and current[name] != meta["config"].get(name, defaults[name])
    )
    if changed:
        raise ValueError(
            f"The checkpoint in {directory} was written with another config (differs in {', '.join(changed)}); "
            "resume with the same config, or train into a new output_dir (or delete that checkpoint)"
        )
    for name, module in modules.items():
        load_trainable_state(accelerator.unwrap_model(module), load_file(str(directory / f"{name}.safetensors")))
    for name, optimizer in optimizers.items():
        load_optimizer(
            optimizer, load_file(str(directory / f"optimizer-{name}.safetensors")), meta["optimizers"][name]
        )
    for name, scheduler in schedulers.items():
        scheduler.load_state_dict({**scheduler.state_dict(), **meta["schedulers"][name]})
    rank = accelerator.process_index
    rng_meta = json.loads((directory / f"rng-{rank}.json").read_text())
    set_rng_state(load_file(str(directory / f"rng-{rank}.safetensors")), rng_meta)
    return int(meta["step"])


def load_trained_summarizer(run_dir: str | Path, device: torch.device | str = "cpu"):
    """The summarizer a finished `plus.coadapt.train_plus` run left in ``run_dir/final/`` (its config and the
    trained weights, e.g. the LoRA adapters notebook 04 keeps in git), rebuilt for sampling: (policy, tokenizer,
    config), the policy in eval mode. A run whose summarizer was frozen (PLUS-untrained) has no adapters: that
    is the base summarizer, and this says so."""
    from plus.coadapt.loop import build_summarizer

    final = Path(run_dir) / "final"
    if not (final / "config.json").exists():
        raise FileNotFoundError(f"{final} holds no config.json: the run in {run_dir} did not finish")
    config = CoadaptConfig.from_dict(json.loads((final / "config.json").read_text()))
    if not config.train_summarizer:
        raise ValueError(
            f"the run in {run_dir} kept its summarizer frozen (train_summarizer=False): load "
            f"{config.summarizer_model!r} itself instead"
        )
    weights = final / "actor.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing: the trained summarizer of {run_dir} was not kept")
    policy, _, tokenizer = build_summarizer(config, torch.device(device))
    try:
        load_trainable_state(policy, load_file(str(weights)))
    except ValueError as error:
        raise ValueError(f"{weights}: {error}") from None
    return policy.eval(), tokenizer, config
