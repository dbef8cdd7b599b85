"""Tidy an executed notebook for the book: what a reader sees and what git stores.

``python -m plus.book tidy NOTEBOOK...`` (run by ``make run`` after papermill) rewrites each executed notebook in
place:

- stderr stream outputs (progress bars, warnings of the libraries) are dropped: the book does not show them
  (``nb_output_stderr: remove``) and they made page 04's notebook 144 KB of bars;
- the executing machine's absolute path of the repository is replaced by ``.`` in every output, so stored
  notebooks do not depend on where they ran;
- every code cell but the parameter cells is tagged ``hide-input``: the book shows outputs and hides the code
  behind a toggle; the parameters (``parameters`` and papermill's ``injected-parameters``) stay visible.

Code sources are never changed, so the test that the book's copy is its template executed still holds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from plus.artifacts import read_text, write_text_atomic

VISIBLE_TAGS = ("parameters", "injected-parameters")
"""Code cells with one of these tags keep their input visible."""


def tidy_notebook(notebook: dict, repo_root: str) -> dict:
    """The notebook with stderr outputs dropped, ``repo_root`` replaced by ``.`` in outputs, and code cells
    other than the parameter cells tagged ``hide-input``."""
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
    return notebook


def tidy_file(path: str | Path, repo_root: str | Path) -> Path:
    """`tidy_notebook` on the notebook file at ``path``, rewritten atomically."""
    path = Path(path)
    try:
        notebook = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a notebook (invalid JSON: {error})") from None
    tidied = tidy_notebook(notebook, str(Path(repo_root).resolve()))
    return write_text_atomic(path, json.dumps(tidied, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m plus.book", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tidy = sub.add_parser("tidy", help="tidy executed notebooks in place")
    tidy.add_argument("notebooks", nargs="+", type=Path)
    tidy.add_argument("--repo-root", default=".", help="the path to replace by '.' in outputs (default: .)")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        tidy_file(path, args.repo_root)


if __name__ == "__main__":
    main()
