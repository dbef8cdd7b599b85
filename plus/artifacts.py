"""Run directories and result files: metrics as JSON and JSONL, never pickles.

Experiment notebooks write here; figure notebooks and the book only read, so the book can be rebuilt
without retraining.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
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


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: into a scratch file of its own in the same folder, synced,
    then renamed over ``path``. A crash leaves the old file or the new one, never half of either, and two
    writers never share a scratch file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (`write_text_atomic`)."""
    return write_text_atomic(path, json.dumps(_clean(obj), indent=2, sort_keys=True) + "\n")


def as_read_back(obj: Any) -> Any:
    """``obj`` as `read_json` gives it back once written (tuples become lists, keys strings), for comparing a
    config or fingerprint with a file."""
    return json.loads(json.dumps(obj))


def read_text(path: str | Path) -> str:
    """The UTF-8 text of ``path``; invalid UTF-8 is an error that names the file, line and byte."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte {error.start}: {error.reason})") from None


def numbered_lines(path: str | Path) -> Iterator[tuple[str, str]]:
    """(``path:line``, text) for each line of a UTF-8 text file (`read_text`), for errors that name the line."""
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        yield f"{path}:{number}", line


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No result file at {path}: run the experiment notebook that writes it first")
    try:
        return json.loads(read_text(path))
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
    rows = []
    for where, line in numbered_lines(path):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{where} is not a JSON object: {error}") from error
    return rows


TABLE_KEYS: tuple[str, ...] = (
    "dataset",
    "split",
    "subset",
    "method",
    "metric",
    "mean",
    "ci_low",
    "ci_high",
    "n",
    "seeds",
    "reported",
)
"""The fields of one row of an experiment's ``table.json`` (``../shared/RESULTS.md``)."""


def write_table(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write an experiment's ``table.json`` whole (atomically, `write_json`), after checking every row has
    exactly `TABLE_KEYS`, a finite mean inside its interval and at least one seed. Raises ValueError naming
    the row."""
    for index, row in enumerate(rows):
        if set(row) != set(TABLE_KEYS):
            raise ValueError(f"{path}: table row {index} has keys {sorted(row)}, expected {list(TABLE_KEYS)}")
        mean, low, high = row["mean"], row["ci_low"], row["ci_high"]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (mean, low, high)) or not (
            low <= mean <= high
        ):
            raise ValueError(
                f"{path}: table row {index} ({row['dataset']}, {row['method']}) has mean {mean} "
                f"outside [{low}, {high}] or a non-finite value"
            )
        if not row["seeds"] or not isinstance(row["n"], int) or row["n"] < 1:
            raise ValueError(f"{path}: table row {index} needs seeds and n >= 1, got {row['seeds']}, {row['n']}")
    return write_json(path, [{key: row[key] for key in TABLE_KEYS} for row in rows])
