"""Tidy an executed notebook for the book: what a reader sees and what git stores.

``python -m plus.book tidy NOTEBOOK...`` (run by ``make run`` after papermill) rewrites each executed notebook in
place:

- stderr stream outputs (progress bars, warnings of the libraries) are dropped: the book does not show them
  (``nb_output_stderr: remove``) and they made page 04's notebook 144 KB of bars;
- the executing machine's absolute path of the repository is replaced by ``.`` in every output, so stored
  notebooks do not depend on where they ran;
- every code cell but the parameter cells is tagged ``hide-input``: the book shows outputs and hides the code
  behind a toggle; the parameters (``parameters`` and papermill's ``injected-parameters``) stay visible;
- the run's provenance (`provenance`: the commit checked out, whether tracked files differed from it, the versions
  of plus and the libraries, the machine, papermill's start time and duration) goes to ``metadata.plus`` and to a
  last markdown cell, tagged ``provenance``, that the page shows.

Code sources are never changed, so the test that the book's copy is its template executed still holds.

`settings_table` is the pages' one way to show a config or a dict of counts: a two-column table, not a repr.
``python -m plus.book timings README.md`` (run by ``make run`` after executing) writes how long each executed
notebook took, on which machine and at which commit, into the README's timings block (`write_timings`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from dataclasses import fields, is_dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plus.artifacts import read_text, write_text_atomic

if TYPE_CHECKING:
    import pandas as pd

VISIBLE_TAGS = ("parameters", "injected-parameters")
"""Code cells with one of these tags keep their input visible."""


PACKAGES = ("plus", "torch", "transformers", "trl", "peft")
"""Packages whose versions an executed notebook records."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in fields(value)}
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            nested = (isinstance(item, dict) and item) or (is_dataclass(item) and not isinstance(item, type))
            flat |= _flatten(item, f"{prefix}{key}.") if nested else {f"{prefix}{key}": None if item == {} else item}
        return flat
    return {prefix.rstrip("."): value}


def settings_table(value: Any, column: str = "value", index: str = "setting") -> pd.DataFrame:
    """A dataclass (a config) or a dict, nested ones flattened to dotted names, as a one-column table for a
    page (rows named ``index``): sequences joined by commas, None shown as "none", so no Python repr reaches
    the reader."""
    import pandas as pd

    def shown(item: Any) -> str:
        if item is None:
            return "none"
        if isinstance(item, (list, tuple)):
            return ", ".join(map(shown, item)) or "none"
        if isinstance(item, float):
            return f"{item:g}"
        return str(item)

    flat = _flatten(value)
    if not flat:
        raise ValueError(f"settings_table: nothing to show in {type(value).__name__}")
    return pd.DataFrame({column: {name: shown(item) for name, item in flat.items()}}).rename_axis(index)


def _git(repo_root: str | Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(repo_root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def provenance(repo_root: str | Path) -> dict:
    """What a notebook executed in ``repo_root`` ran under: ``commit`` (``None`` outside git), ``dirty`` (tracked
    files other than ``book/notebooks/``, ``results/`` and ``README.md`` (its timings), which runs rewrite, differ
    from it), the ``packages`` (name -> version) and the ``machine`` (system, processor, CPU count)."""
    commit = _git(repo_root, "rev-parse", "HEAD")
    # What the run itself rewrites (the executed notebooks, the results, README's timings) is not a change to the code.
    outputs = (":(exclude)book/notebooks", ":(exclude)results", ":(exclude)README.md")
    status = _git(repo_root, "status", "--porcelain", "--untracked-files=no", "--", ".", *outputs) if commit else None
    return {
        "commit": commit,
        "dirty": bool(status),
        "packages": {name: _version(name) for name in PACKAGES},
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
    }


def started_at(papermill: dict) -> str:
    """Papermill's start time of an execution (``metadata.papermill``) as ``YYYY-MM-DD HH:MM`` (UTC), or ""."""
    return (papermill.get("start_time") or "")[:16].replace("T", " ")


def provenance_markdown(record: dict, papermill: dict) -> str:
    """The provenance line a page shows, from ``metadata.plus`` and ``metadata.papermill``."""
    commit = (record.get("commit") or "unknown")[:10]
    dirty = " with uncommitted changes" if record.get("dirty") else ""
    packages = ", ".join(f"{name} {v}" for name, v in record.get("packages", {}).items())
    when = started_at(papermill)
    minutes = papermill.get("duration")
    took = f" in {minutes / 60:.1f} min" if isinstance(minutes, int | float) else ""
    at = f" on {when} UTC" if when else ""
    return (
        f"```{{note}}\nThis page was executed{at}{took} at commit `{commit}`{dirty}, with {packages}, "
        f"on {record.get('machine', 'an unrecorded machine')}.\n```"
    )


def tidy_notebook(notebook: dict, repo_root: str, record: dict | None = None) -> dict:
    """The notebook with stderr outputs dropped, ``repo_root`` replaced by ``.`` in outputs, code cells other
    than the parameter cells tagged ``hide-input``, and, given ``record`` (`provenance`), that record in
    ``metadata.plus`` and as the last cell (replacing an earlier provenance cell)."""
    root = repo_root.rstrip("/")

    def strip_root(value):
        if isinstance(value, str):
            return value.replace(root + "/", "./").replace(root, ".")
        if isinstance(value, list):
            return [strip_root(v) for v in value]
        if isinstance(value, dict):
            return {k: strip_root(v) for k, v in value.items()}
        return value

    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        outputs = [
            o for o in cell.get("outputs", []) if not (o.get("output_type") == "stream" and o.get("name") == "stderr")
        ]
        cell["outputs"] = [strip_root(o) for o in outputs]
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if not any(tag in tags for tag in VISIBLE_TAGS) and "hide-input" not in tags:
            tags.append("hide-input")
    if record is not None:
        notebook.setdefault("metadata", {})["plus"] = record
    record = notebook.get("metadata", {}).get("plus")
    cells = [c for c in notebook.get("cells", []) if "provenance" not in c.get("metadata", {}).get("tags", [])]
    if record is not None:
        papermill = notebook["metadata"].get("papermill", {})
        source = provenance_markdown(record, papermill)
        cells.append(
            {"cell_type": "markdown", "id": "provenance", "metadata": {"tags": ["provenance"]}, "source": source}
        )
    notebook["cells"] = cells
    return notebook


def tidy_file(path: str | Path, repo_root: str | Path, record: dict | None = None) -> Path:
    """`tidy_notebook` on the notebook file at ``path``, rewritten atomically; without ``record`` the
    notebook's own provenance (if any) is kept."""
    path = Path(path)
    try:
        notebook = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a notebook (invalid JSON: {error})") from None
    tidied = tidy_notebook(notebook, str(Path(repo_root).resolve()), record)
    return write_text_atomic(path, json.dumps(tidied, indent=1, ensure_ascii=False) + "\n")


TIMINGS_START = "<!-- timings: written by `python -m plus.book timings`, from the executed notebooks -->"
TIMINGS_END = "<!-- /timings -->"


def timings_markdown(book_notebooks: str | Path) -> str:
    """How long each executed notebook in ``book_notebooks`` took, as papermill recorded it, and the whole book:
    a Markdown table with the profile, machine and commit of each execution (`plus.overview.notebook_durations`)."""
    from plus.overview import notebook_durations

    rows = notebook_durations(book_notebooks)
    if not rows:
        raise ValueError(f"{book_notebooks}: no notebook executed by papermill to time")
    lines = ["| notebook | profile | minutes | machine | commit |", "|---|---|---:|---|---|"]
    lines += [
        f"| `{r['notebook']}` | {r['profile']} | {r['minutes']:.1f} | {r['machine']} | `{r['commit']}` |" for r in rows
    ]
    machines = ", ".join(dict.fromkeys(r["machine"] for r in rows))
    lines.append(f"| **the whole book** | | **{sum(r['minutes'] for r in rows):.1f}** | {machines} | |")
    return "\n".join(lines)


def write_timings(readme: str | Path, book_notebooks: str | Path) -> Path:
    """Replace the block between `TIMINGS_START` and `TIMINGS_END` in ``readme`` by `timings_markdown`."""
    readme = Path(readme)
    text = read_text(readme)
    start, end = text.find(TIMINGS_START), text.find(TIMINGS_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no timings block: add the lines {TIMINGS_START!r} and {TIMINGS_END!r}")
    block = f"{TIMINGS_START}\n{timings_markdown(book_notebooks)}\n"
    return write_text_atomic(readme, text[:start] + block + text[end:])


DEPARTURES: tuple[tuple[str, str], ...] = (
    ("PLUS: the co-adaptation loop", "plus.coadapt"),
    ("PReF", "plus.factorization.core"),
    ("VPL and PAL-B", "plus.user_models"),
    ("DPL", "plus.baselines.DPL"),
    ("ICL", "plus.baselines.ICL"),
    ("Zero-shot personalized generation", "plus.personalize"),
    ("Readable, editable summaries", "plus.readable"),
    ("PReF's best-of-N over generated text", "plus.factorization.generated"),
    ("Flexible contexts", "plus.flexible_contexts"),
)
"""The book's departures page: (method, the module or class whose docstring lists its departures)."""


def departures(docstring: str) -> str:
    """The bullet list that follows the first line starting with "Departures from" in ``docstring`` (dedented),
    that line included; an error when there is none."""
    import inspect

    lines = inspect.cleandoc(docstring).splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Departures from")), None)
    if start is None:
        raise ValueError("The docstring has no 'Departures from ...' paragraph")
    kept, seen_bullet = [], False
    for line in lines[start:]:
        if not seen_bullet and not line.startswith("- "):
            kept.append(line)  # the lead sentence, over one or more lines, and the blank line after it
            continue
        if line.startswith("- "):
            seen_bullet = True
        elif seen_bullet and line and not line.startswith("  "):
            break  # the first paragraph after the list
        if seen_bullet:
            kept.append(line)
    return "\n".join(kept).rstrip()


def departures_markdown() -> str:
    """The departures page: for each method of `DEPARTURES`, its docstring's list (`departures`)."""
    import importlib

    parts = [
        "# Departures from the papers and the authors' code",
        "",
        "Where `plus` implements a method differently from its paper or its authors' public code, the module says so"
        " and why. This page is those lists, read from the docstrings (`python -m plus.book departures`), so it and"
        " the code say the same thing. Everything not listed matched the authors' code on identical inputs, to"
        " rounding error.",
    ]
    for method, target in DEPARTURES:
        try:
            obj = importlib.import_module(target)
        except ModuleNotFoundError:  # a class: module.Class
            module_name, _, attribute = target.rpartition(".")
            obj = getattr(importlib.import_module(module_name), attribute)
        parts += ["", f"## {method}", "", f"From `{target}`:", "", departures(obj.__doc__ or "")]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m plus.book", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tidy = sub.add_parser("tidy", help="tidy executed notebooks in place")
    tidy.add_argument("notebooks", nargs="+", type=Path)
    tidy.add_argument("--repo-root", default=".", help="the path to replace by '.' in outputs (default: .)")
    tidy.add_argument(
        "--record-provenance",
        action="store_true",
        help="record the commit, package versions and machine of --repo-root now (right after executing)",
    )
    timings = sub.add_parser("timings", help="write the executed notebooks' run times into a README's timings block")
    timings.add_argument("readme", type=Path)
    timings.add_argument("--notebooks", default="book/notebooks", type=Path, help="the executed notebooks")
    pages = sub.add_parser("departures", help="write the book's departures page from the modules' docstrings")
    pages.add_argument("page", type=Path)
    args = parser.parse_args(argv)
    if args.command == "departures":
        write_text_atomic(args.page, departures_markdown())
        return
    if args.command == "timings":
        write_timings(args.readme, args.notebooks)
        return
    record = provenance(args.repo_root) if args.record_provenance else None
    for path in args.notebooks:
        tidy_file(path, args.repo_root, record)


if __name__ == "__main__":
    main()
