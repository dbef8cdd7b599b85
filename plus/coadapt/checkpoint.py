"""Checkpoints of the co-adaptation loop: trainable weights, optimizer and RNG states as safetensors + JSON (no
pickles), refused on resume when the config or the records differ; logs cut back to the checkpoint's step."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn

from plus.artifacts import as_read_back, write_json, write_text_atomic
from plus.coadapt.config import CoadaptConfig

CHECKPOINT_DIR = "checkpoint"


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
        _load_trainable_state(policy, load_file(str(weights)))
    except ValueError as error:
        raise ValueError(f"{weights}: {error}") from None
    return policy.eval(), tokenizer, config
