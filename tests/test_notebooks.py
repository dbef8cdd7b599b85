"""Every notebook template runs under papermill at the smoke profile, stays thin, and the book's executed copy
is the template run as it is now (so every number in the book comes from the current code)."""

import ast
import json
from pathlib import Path

import nbformat
import papermill
import pytest

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))


def code_cells(path: Path) -> list[str]:
    notebook = nbformat.read(path, as_version=4)
    return [
        c.source
        for c in notebook.cells
        if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])
    ]


def test_there_are_notebooks():
    assert TEMPLATES, "no notebook templates in notebooks/"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_template_is_thin_and_parameterized(template):
    notebook = nbformat.read(template, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    names = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert {"profile", "output_dir"} <= names
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        assert not cell.get("outputs"), "templates are stored without outputs"
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            assert not isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef), "logic lives in plus/"
            if isinstance(node, ast.ImportFrom):
                assert all(alias.name != "*" for alias in node.names), "no star imports"
        assert "sys.path" not in cell.source


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_book_copy_is_the_current_template_executed(template):
    executed = REPO / "book" / "notebooks" / template.name
    assert executed.exists(), f"run `make run NOTEBOOKS={template.relative_to(REPO)}` to put it in the book"
    assert code_cells(executed) == code_cells(template), "the book's copy is stale: re-run the notebook"
    notebook = nbformat.read(executed, as_version=4)
    injected = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "profile" in injected[0].source, "papermill's injected parameters are kept visible"
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", f"{executed.name} was stored with an error"


@pytest.mark.notebook
@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_notebook_runs_at_smoke_profile(template, tmp_path):
    output = tmp_path / template.name
    papermill.execute_notebook(
        str(template),
        str(output),
        parameters={"profile": "smoke", "output_dir": str(tmp_path / "results")},
        cwd=str(REPO),
        kernel_name="python3",
        progress_bar=False,
    )
    notebook = json.loads(output.read_text())
    assert notebook["metadata"]["papermill"]["exception"] in (None, False)
