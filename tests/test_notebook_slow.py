"""The Kaggle notebook (notebooks/cotgen-kaggle-tpu.ipynb): stored clean and in sync with its generator, and
executed top to bottom at smoke scale (`cotgen run --smoke`: tiny random models, the recipe's stage graph)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_smoke_slow import check_smoke_run

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "cotgen-kaggle-tpu.ipynb"


def _parameters_cell(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def test_notebook_is_clean_nbformat_v4():
    import nbformat
    from IPython.core import inputtransformer2 as ipython

    nb = nbformat.read(NOTEBOOK, as_version=nbformat.NO_CONVERT)
    assert nb.nbformat == 4
    nbformat.validate(nb)
    _parameters_cell(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "the notebook is stored with outputs"
            ast.parse(ipython.TransformerManager().transform_cell(cell.source))  # %pip and ! lines included
    check = subprocess.run([sys.executable, str(REPO / "notebooks" / "build_notebook.py"), "--check"],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.slow
def test_notebook_runs_at_smoke_scale(tmp_path):
    import nbclient
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the notebook's own recipe, on 8 host devices: this is also the gemma3-1b-tpu smoke run of test_smoke_slow
    recipe = REPO / "recipes" / "gemma3-1b-tpu.toml"
    out = tmp_path / "nb"
    params = {"RECIPE": str(recipe), "SMOKE": True, "OUT": str(out), "INSTALL": False,
              "COTGEN_SRC": str(REPO), "KAGGLE_MODEL": None, "TEACHER": None, "VLLM_PYTHON": None,
              "DATA_DIR": os.environ["COTGEN_DATA_DIR"]}  # set by conftest's _data_env
    index = _parameters_cell(nb)
    nb.cells[index].source = "\n".join(f"{k} = {v!r}" for k, v in params.items())

    client = nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})  # the kernel's cwd
    try:
        client.execute()
    finally:
        (tmp_path / "executed.ipynb").write_text(nbformat.writes(nb))  # to read when it fails
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors

    def cell_with(text: str):
        return next(c for c in code if text in c.source)

    report = cell_with("report.md")
    assert any("text/markdown" in o.get("data", {}) for o in report.outputs)
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "no PNG displayed"
    assert (out / "tunix-checkpoint" / "params").is_dir()
    manifest = json.loads((out / "tunix-checkpoint" / "cotgen-model.json").read_text())
    assert manifest["format"] == "orbax"
    sample = cell_with("greedy(")
    printed = "".join(o.get("text", "") for o in sample.outputs
                      if o.output_type == "stream" and o.name == "stdout")
    assert "\n-> " in printed and "format ok:" in printed, printed
    check_smoke_run(recipe, out)
