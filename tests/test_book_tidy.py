"""Executed notebooks are tidied for the book without touching their code."""

import json
import subprocess
from pathlib import Path

import pytest

from plus.book import provenance, tidy_file


def test_tidy_drops_stderr_and_absolute_paths_and_hides_code_but_the_parameters(tmp_path):
    root = "/home/someone/plus"
    cells = [
        {
            "cell_type": "code",
            "metadata": {"tags": ["injected-parameters"]},
            "source": "profile = 'cpu'",
            "outputs": [],
        },
        {
            "cell_type": "code",
            "metadata": {},
            "source": "run()",
            "outputs": [
                {"output_type": "stream", "name": "stderr", "text": "100%|#####| 8/8\n"},
                {"output_type": "stream", "name": "stdout", "text": f"wrote {root}/results/cpu/x.json\n"},
                {"output_type": "execute_result", "data": {"text/plain": [f"PosixPath('{root}')"]}, "metadata": {}},
            ],
        },
        {"cell_type": "markdown", "metadata": {}, "source": "# Title"},
    ]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    tidy_file(path, root)
    tidied = json.loads(path.read_text())["cells"]
    assert [c["source"] for c in tidied] == [c["source"] for c in cells]  # code untouched
    assert tidied[0]["metadata"]["tags"] == ["injected-parameters"]
    assert tidied[1]["metadata"]["tags"] == ["hide-input"]
    outputs = tidied[1]["outputs"]
    assert [o["output_type"] for o in outputs] == ["stream", "execute_result"] and outputs[0]["name"] == "stdout"
    assert root not in json.dumps(outputs) and "./results/cpu/x.json" in outputs[0]["text"]
    tidy_file(path, root)  # idempotent
    assert json.loads(path.read_text())["cells"] == tidied


def test_provenance_is_recorded_once_and_shown_in_a_last_cell(tmp_path):
    cells = [{"cell_type": "code", "metadata": {}, "source": "run()", "outputs": []}]
    metadata = {"papermill": {"start_time": "2026-12-04T10:00:00.000000", "duration": 90.0}}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}))
    record = {"commit": "0123456789abcdef", "dirty": True, "packages": {"torch": "9.9"}, "machine": "Linux x, 2 CPUs"}
    tidy_file(path, tmp_path, record)
    tidy_file(path, tmp_path, {**record, "commit": "fedcba9876543210", "dirty": False})  # a re-execution replaces it
    tidy_file(path, tmp_path)  # tidying again without a record keeps the notebook's own
    notebook = json.loads(path.read_text())
    assert notebook["metadata"]["plus"]["commit"] == "fedcba9876543210"
    assert [c["cell_type"] for c in notebook["cells"]] == ["code", "markdown"]
    shown = notebook["cells"][-1]["source"]
    assert notebook["cells"][-1]["metadata"]["tags"] == ["provenance"] and notebook["cells"][-1]["id"] == "provenance"
    assert "`fedcba9876`" in shown and "uncommitted" not in shown and "1.5 min" in shown and "torch 9.9" in shown
    assert "2026-12-04 10:00 UTC" in shown
    outside_git = provenance(tmp_path)
    assert outside_git["commit"] is None and not outside_git["dirty"] and "CPUs" in outside_git["machine"]


def test_provenance_is_dirty_for_changed_code_but_not_for_what_a_run_rewrites(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for name in ("results/cpu/t.json", "book/notebooks/n.ipynb", "README.md", "plus/code.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    (tmp_path / "results/cpu/t.json").write_text("1")
    (tmp_path / "book/notebooks/n.ipynb").write_text("1")
    (tmp_path / "README.md").write_text("1")  # its timings block, rewritten by `make run`
    clean = provenance(tmp_path)
    assert len(clean["commit"]) == 40 and not clean["dirty"]
    (tmp_path / "plus/code.py").write_text("1")
    assert provenance(tmp_path)["dirty"]


def test_settings_table_shows_a_config_or_a_dict_without_reprs():
    from dataclasses import dataclass, field

    from plus.book import settings_table

    @dataclass
    class Inner:
        rate: float = 0.003
        seeds: tuple = (0, 1, 2)

    @dataclass
    class Outer:
        inner: Inner = field(default_factory=Inner)
        path: Path = Path("results/cpu")
        note: str | None = None

    table = settings_table(Outer())
    assert table["value"].to_dict() == {"inner.rate": "0.003", "inner.seeds": "0, 1, 2", "path": "results/cpu",
                                        "note": "none"}  # fmt: skip
    counts = settings_table({"pets": {"num_train": 8}, "attributes": {}, "prism": 3}, column="records")
    assert counts["records"].to_dict() == {"pets.num_train": "8", "attributes": "none", "prism": "3"}
    with pytest.raises(ValueError, match="nothing to show"):
        settings_table({})


def test_the_readme_timings_block_is_rewritten_from_the_executed_notebooks(tmp_path):
    from plus.book import TIMINGS_END, TIMINGS_START, main

    papermill = {"duration": 90.0, "start_time": "2026-12-04T17:50:01", "parameters": {"profile": "cpu"}}
    record = {"machine": "Linux x86_64, 2 CPUs", "commit": "338694af30e1"}
    (tmp_path / "01_a.ipynb").write_text(json.dumps({"metadata": {"papermill": papermill, "plus": record}}))
    (tmp_path / "02_b.ipynb").write_text(json.dumps({"metadata": {"papermill": {**papermill, "duration": 30.0}}}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{TIMINGS_START}\nold table\n{TIMINGS_END}\n\nafter\n")
    main(["timings", str(readme), "--notebooks", str(tmp_path)])
    text = readme.read_text()
    assert "old table" not in text and text.endswith(f"{TIMINGS_END}\n\nafter\n")
    assert "| `01_a` | cpu | 1.5 | Linux x86_64, 2 CPUs | `338694af30` |" in text
    assert "| **the whole book** | | **2.0** | Linux x86_64, 2 CPUs, not recorded | |" in text
    readme.write_text("# no block\n")
    with pytest.raises(ValueError, match="no timings block"):
        main(["timings", str(readme), "--notebooks", str(tmp_path)])
    assert readme.read_text() == "# no block\n"  # nothing lost


def test_the_readme_states_the_stored_notebooks_run_times():
    from plus.book import TIMINGS_END, TIMINGS_START, timings_markdown

    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    block = readme[readme.index(TIMINGS_START) + len(TIMINGS_START) : readme.index(TIMINGS_END)]
    assert block.strip() == timings_markdown(repo / "book" / "notebooks"), (
        "run `python -m plus.book timings README.md`"
    )


def test_the_departures_page_is_the_modules_lists_and_each_method_has_one():
    from plus.book import DEPARTURES, departures, departures_markdown

    repo = Path(__file__).resolve().parents[1]
    page = (repo / "book" / "departures.md").read_text(encoding="utf-8")
    assert page == departures_markdown(), (
        "book/departures.md is stale: run `python -m plus.book departures book/departures.md`"
    )
    assert {method for method, _ in DEPARTURES} >= {"PReF", "VPL and PAL-B", "DPL", "PLUS: the co-adaptation loop"}
    for method, _ in DEPARTURES:
        section = page.split(f"## {method}\n", 1)[1].split("\n## ", 1)[0]
        assert section.count("\n- ") >= 2, method  # a list, not a heading alone
    listed = "Departures from the authors' code (which\nspans two lines):\n\n- one;\n- two,\n  continued."
    assert departures(f"Intro.\n\n{listed}\n\nAfter.") == listed
    with pytest.raises(ValueError, match="no 'Departures from"):
        departures("A docstring without the list.")
