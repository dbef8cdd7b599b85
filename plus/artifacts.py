"""Run directories and result files: metrics as JSON and JSONL, never pickles.

Experiment notebooks write here; figure notebooks and the book only read, so the book can be rebuilt
without retraining.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from plus.config import config_hash


def run_dir(root: str | Path, config: object) -> Path:
    """``root/<ConfigClass>-<hash>``: one folder per distinct config, created if missing."""
    path = Path(root) / f"{type(config).__name__}-{config_hash(config)}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _clean(value: Any) -> Any:
    """Plain JSON: tensors and numpy scalars become numbers, NaN and inf become null."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(path.suffix + ".tmp")
    scratch.write_text(json.dumps(_clean(obj), indent=2, sort_keys=True) + "\n")
    scratch.replace(path)
    return path


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No result file at {path}: run the experiment notebook that writes it first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


class MetricsWriter:
    """Appends one JSON object per line (``step`` plus slash-namespaced metrics, e.g. ``losses/reward``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(_clean({"step": step, **metrics}), sort_keys=True) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows a `MetricsWriter` wrote, in order."""
    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number} is not a JSON object: {error}") from error
    return rows
