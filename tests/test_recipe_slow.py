"""`cotgen run` end to end on the embedded Gemma 3 270M: a tiny recipe through every stage (vLLM generate, filter,
Tunix LoRA SFT, export, vLLM eval of base and student, report), then a second run that skips everything."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TINY_RECIPE = """
[run]
goal_points = 10

[problems]
task = "basic_arithmetic"
config = { min_terms = 2, max_terms = 2, min_digits = 1, max_digits = 1, operators = ["+"], \
allow_parentheses = false, allow_negation = false }
train = 24
test = 16

[generate]
teacher = "gemma-3-270m"
n = 4
temperature = 0.5
max_tokens = 48
enforce_eager = true
max_model_len = 1024

[train]
model = "gemma-3-270m"
lora_rank = 4
steps = 2
batch_size = 2
max_len = 192
tensorboard = false

[eval]
max_tokens = 48
max_model_len = 1024

[eval.base]
prompt_style = "few_shot"

[eval.final]
prompt_style = "chat"
"""


@pytest.mark.slow
def test_tiny_recipe_end_to_end(tmp_path, embedded_folder):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cotgen.cli", "run", str(recipe), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-5000:]
    for folder in ("problems", "traces", "data", "sft", "sft-model", "eval-base", "eval-final"):
        assert any((out / folder).iterdir()), folder
    assert (out / "sft-model" / "cotgen-model.json").is_file()
    doc = json.loads((out / "report.json").read_text())
    head = doc["phases"][0]["headline"]
    assert 0 <= head["a"] <= 1 and 0 <= head["b"] <= 1 and head["lo"] <= head["diff"] <= head["hi"]
    assert doc["phases"][0]["prompts"]["final"]["prompt_style"] == "chat"
    assert (out / "report.png").stat().st_size > 1000
    timings = {t["stage"]: t["wall_s"] for t in doc["timings"]}
    print(json.dumps(timings))

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skipped") == 7, again.stderr[-2000:]
