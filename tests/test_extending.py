"""The book's "Extending" section works as written: its code adds a population and a baseline that the
benchmark then runs by name."""

import re
from pathlib import Path

import pytest

from plus.artifacts import read_json
from plus.baselines import METHODS
from plus.data import DATASETS

REPO = Path(__file__).resolve().parents[1]


def extending_code() -> str:
    page = (REPO / "book" / "reproduce.md").read_text()
    section = page.split("## Extending", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2, "the Extending section should hold the registration and the run"
    return "\n".join(blocks)


@pytest.fixture
def registries():
    """The method and data set registries as they were before the test (the section adds to both)."""
    before = dict(METHODS), dict(DATASETS)
    yield
    for registry, saved in zip((METHODS, DATASETS), before, strict=True):
        registry.clear()
        registry.update(saved)


@pytest.mark.slow
def test_the_extending_section_adds_a_population_and_a_baseline_the_benchmark_runs(tmp_path, monkeypatch, registries):
    monkeypatch.chdir(tmp_path)  # the section writes results/smoke/extending relative to the working folder
    exec(compile(extending_code(), "book/reproduce.md", "exec"), {})
    rows = read_json(tmp_path / "results/smoke/extending/table.json")
    methods = {row["method"] for row in rows}
    assert methods == {"btl", "icl", "icl-last", "majority"}  # majority: the user-blind ceiling, from the data
    assert {row["dataset"] for row in rows} == {"pets-one-pair"}
    assert {(row["split"], row["subset"]) for row in rows if row["method"] == "icl-last"} >= {
        ("test", "all"),
        ("test", "contested"),
        ("test_ood", "all"),
    }
