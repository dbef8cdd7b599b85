"""Executed notebooks are tidied for the book without touching their code."""

import json

from plus.book import tidy_file


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
