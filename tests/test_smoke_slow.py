"""`cotgen run RECIPE --smoke` on the TPU recipes, as a user runs it: every stage of the real stage graph runs on
tiny random models of the recipe's family, with the recipe's fsdp=8 meshes on 8 host CPU devices. gemma3-1b-tpu's
smoke run is the notebook test's (tests/test_notebook_slow.py: the notebook runs it, then the same checks); the GPU
recipe's smoke is not in CI (its dry-run is: tests/test_users_path.py; run by hand, README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemma2-2b-tpu"])  # gemma3-1b-tpu: the notebook test runs its smoke
def test_tpu_recipe_smoke_runs_every_stage(name, tmp_path, data_dir):
    recipe = REPO / "recipes" / f"{name}.toml"
    out = tmp_path / "run"
    env = {**os.environ, "COTGEN_DATA_DIR": str(data_dir), "COTGEN_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-m", "cotgen.cli", "run", str(recipe), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    check_smoke_run(recipe, out)


def check_smoke_run(recipe: Path, out: Path) -> None:
    """Every stage done, on tiny models of the recipe's family, with the recipe's fsdp=8 mesh really sharded."""
    from cotgen.recipe import plan as plan_mod

    plan = plan_mod.build(recipe, out=out, smoke=True)
    for stage in plan.stages:
        record = json.loads((out / "recipe" / f"{stage.name}.json").read_text())
        assert record["status"] == "done", stage.name
    tiny = "tiny-gemma2" if recipe.name.startswith("gemma2") else "tiny"
    train = json.loads((out / "sft" / "run.json").read_text())  # `cotgen train` or, with [distill], distill's
    assert train["model"] == tiny and train["mesh"] == "fsdp=8,tp=1"
    assert len(train["devices"]) == 8 and train["sharded_arrays"] > 0  # fsdp=8 really shards the weights
    rl = json.loads((out / "rl" / "math" / "run.json").read_text())
    assert len(rl["devices"]) == 8 and rl["mesh"] == "fsdp=8,tp=1"  # the recipe's mesh, really sharded
    exported = json.loads((out / "rl-model" / "math" / "config.json").read_text())
    assert exported["model_type"] == ("gemma2" if tiny == "tiny-gemma2" else "gemma3_text")
    report = (out / "report.md").read_text()
    assert "**Smoke run**" in report and "Base vs trained student, held-out set gsm8k" in report
    assert (out / "report.png").is_file()
