"""Resumable checkpoints for every training run: what is saved, how it is made atomic, how it is verified.

One scheme, used by the co-adaptation loop (`plus.coadapt.checkpoint`) and by reward-model training
(`plus.train.train_reward_model`):

- **What**: trainable weights, optimizer tensors and RNG states as safetensors; the step, the config, the
  records' fingerprint and every other scalar as JSON. No pickles.
- **Atomic**: a checkpoint is written into a fresh ``<name>.incoming`` folder; `write_manifest` then records the
  size and sha256 of every file in it (the manifest, written last and synced, marks it complete); `swap_in`
  replaces ``<name>`` by two renames, keeping the old one as ``<name>.previous`` until the new one is in place.
- **Verified**: `newest_complete` takes the newest of ``<name>``, ``.incoming`` and ``.previous`` whose files all
  match their manifest. A checkpoint that fails (a truncated or changed file) is skipped with a warning naming the
  file, so a resume falls back to the previous checkpoint; when none is left it is an error, never a silent mix.
  A folder with neither a manifest nor a ``state.json`` is a write that never finished: it is ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from plus.artifacts import write_text_atomic

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STATE = "state.json"


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters only (LoRA adapters, unfrozen layers): the frozen rest is rebuilt from the config."""
    return {n: p.detach().cpu().contiguous() for n, p in module.named_parameters() if p.requires_grad}


def load_trainable_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` (`trainable_state`) into ``module``; an error when the names differ."""
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    if set(params) != set(state):
        missing, extra = sorted(set(params) - set(state))[:3], sorted(set(state) - set(params))[:3]
        raise ValueError(f"Checkpoint does not match the model: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].device))


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
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


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Restore what `optimizer_tensors` split."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, slot = key.split(".", 1)
        state.setdefault(int(index), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """The torch (and CUDA), NumPy and Python RNG states, as tensors and JSON."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    python = random.getstate()
    return tensors, {"python": [python[0], list(python[1]), python[2]], "numpy": [kind, position, has_gauss, gauss]}


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    kind, position, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def records_fingerprint(records: Sequence[dict]) -> str:
    """A hash of the training records (their JSON, in order): a resume must train on the same records."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path) -> Path:
    """``directory/manifest.json``: the size and sha256 of every other file, each synced to disk first. Written
    last, it marks the checkpoint complete."""
    files = {}
    for path in sorted(p for p in directory.iterdir() if p.is_file() and p.name != MANIFEST):
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
        files[path.name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    return write_text_atomic(directory / MANIFEST, json.dumps({"files": files}, indent=1, sort_keys=True) + "\n")


def manifest_problem(directory: Path) -> str | None:
    """None when every file of ``directory``'s manifest is there with its size and hash; else what is wrong."""
    manifest = directory / MANIFEST
    if not manifest.exists():
        return f"{directory} has no {MANIFEST} (its write did not finish)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as error:
        return f"{manifest} is not a manifest ({error})"
    for name, expected in sorted(files.items()):
        path = directory / name
        if not path.exists():
            return f"{path} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{path} has {path.stat().st_size} bytes, its manifest says {expected['bytes']}"
        if _sha256(path) != expected["sha256"]:
            return f"{path} does not match the sha256 of its manifest"
    return None


def swap_in(incoming: Path, final: Path) -> None:
    """Replace ``final`` by the complete checkpoint ``incoming`` with two renames; the old one is kept as
    ``<final>.previous`` until the new one is in place."""
    previous = final.with_name(final.name + ".previous")
    if previous.exists():
        shutil.rmtree(previous)
    if final.exists():
        final.rename(previous)
    incoming.rename(final)
    if previous.exists():
        shutil.rmtree(previous)


def incoming_dir(final: Path) -> Path:
    """A fresh, empty ``<final>.incoming`` folder (a half-written one of a killed run is removed first)."""
    incoming = final.with_name(final.name + ".incoming")
    if incoming.exists():
        shutil.rmtree(incoming)
    incoming.mkdir(parents=True)
    return incoming


def newest_complete(final: Path) -> Path | None:
    """The checkpoint to resume from: the newest (by ``state.json``'s ``step``) of ``final``, ``<final>.incoming``
    and ``<final>.previous`` that passes its manifest (`manifest_problem`). One that fails is skipped with a
    warning; None when there is no checkpoint at all; an error when every checkpoint there fails. A checkpoint
    written before manifests existed (a ``state.json``, no manifest) is taken, with a warning."""
    candidates = [final.with_name(final.name + suffix) for suffix in ("", ".incoming", ".previous")]
    complete, problems = [], []
    for candidate in (c for c in candidates if c.is_dir()):
        if not (candidate / MANIFEST).exists() and not (candidate / STATE).exists():
            continue  # never finished: the next save removes or replaces it
        if not (candidate / MANIFEST).exists():
            logger.warning("%s has no %s (written by an older plus); resuming from it unverified", candidate, MANIFEST)
            complete.append(candidate)
            continue
        problem = manifest_problem(candidate)
        if problem is None:
            complete.append(candidate)
        else:
            problems.append(problem)
            logger.warning("Skipping a damaged checkpoint: %s", problem)
    if not complete:
        if problems:
            raise ValueError(
                "No intact checkpoint to resume from: " + "; ".join(problems) + ". Delete the damaged folder to "
                "start the run over, or restore it."
            )
        return None
    return max(complete, key=lambda c: json.loads((c / STATE).read_text())["step"])


def cut_log_after(path: Path, step: int) -> None:
    """Drop the rows of a JSONL log (``metrics.jsonl``, ``rollouts.jsonl``) whose ``step`` is above ``step``:
    what a killed run wrote after its last checkpoint, which the resume writes again."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    write_text_atomic(path, "".join(line + "\n" for line in kept))
