import subprocess
import sys

import polars as pl
import pytest
from click.testing import CliRunner

from cotgen.cli import main

HEAVY = ("jax", "vllm", "tunix", "torch", "transformers", "polars")


def test_help_imports_no_heavy_module():
    code = ("import sys; from cotgen.cli import main\n"
            "try: main(['--help'])\nexcept SystemExit: pass\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Commands:" in out and "generate" in out and "models" in out
    assert out.strip().endswith("[]"), out


class Reached(Exception):
    """Raised by a stand-in for a stage's entry point: the command got there, with these arguments."""


# (command line, module, function it must call, class of its first argument, an attribute the flags set)
STAGES = [
    (["generate", "--limit", "1"], "cotgen.generate.run", "run", ("cotgen.generate.config", "GenerateConfig"),
     ("limit", 1)),
    (["filter", "--seed", "3"], "cotgen.filter.run", "run", ("cotgen.filter.config", "FilterConfig"),
     ("seed", 3)),
    (["distill", "logits", "--limit", "1"], "cotgen.distill.logits", "run",
     ("cotgen.distill.config", "LogitsConfig"), ("limit", 1)),
    (["distill", "train", "--teacher", "tiny", "--steps", "1"], "cotgen.distill.run", "run",
     ("cotgen.distill.config", "DistillConfig"), ("steps", 1)),
    (["distill", "student", "tiny", "--layers", "1", "--out", "OUT"], "cotgen.distill.student", "truncate",
     None, None),
    (["train", "--steps", "1"], "cotgen.train.sft", "run", ("cotgen.train.config", "TrainConfig"),
     ("steps", 1)),
    (["export", "TMP", "--out", "OUT"], "cotgen.train.export", "export", None, None),
    (["rl", "--steps", "1"], "cotgen.train.rl", "run", ("cotgen.train.rl_config", "RLConfig"), ("steps", 1)),
    (["eval", "--limit", "1"], "cotgen.eval.run", "run", ("cotgen.eval.config", "EvalConfig"),
     ("limit", 1)),
    (["run", "RECIPE"], "cotgen.recipe.runner", "run", None, None),  # given plan.build's plan
    (["models", "prepare", "tiny"], "cotgen.models.prepare", "prepare", None, None),
    (["models", "check", "tiny"], "cotgen.models.check", "describe", None, None),
]


@pytest.mark.parametrize("argv, module, function, config, flag", STAGES,
                         ids=[" ".join(s[0][:2]) for s in STAGES])
def test_every_stage_command_calls_its_stage(argv, module, function, config, flag, tmp_path, monkeypatch):
    """Each command, with minimal arguments, reaches its stage's real entry point (imported here, then
    replaced by a stand-in) with a config of the stage's class built from its flags."""
    import importlib

    target = importlib.import_module(module)
    assert callable(getattr(target, function)), f"{module}.{function}"

    def stand_in(*args, **kwargs):
        raise Reached(args, kwargs)

    monkeypatch.setattr(target, function, stand_in)
    plan = object()
    if module == "cotgen.recipe.runner":
        monkeypatch.setattr(importlib.import_module("cotgen.recipe.plan"), "build", lambda *a, **k: plan)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("")
    subs = {"TMP": str(tmp_path), "OUT": str(tmp_path / "out"), "RECIPE": str(recipe)}
    result = CliRunner().invoke(main, [subs.get(a, a) for a in argv])
    assert isinstance(result.exception, Reached), (result.output, result.exception)
    args, _ = result.exception.args
    if config is not None:
        cls = getattr(importlib.import_module(config[0]), config[1])
        assert type(args[0]) is cls, type(args[0])
        assert getattr(args[0], flag[0]) == flag[1]
    elif module == "cotgen.recipe.runner":
        assert args[0] is plan
    assert not (tmp_path / "out").exists()


def test_every_command_is_listed():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.strip()}
    assert {a[0] for a, *_ in STAGES} <= listed


def test_problems_to_parquet_with_provenance(tmp_path, data_dir):
    out = tmp_path / "p.parquet"
    result = CliRunner().invoke(main, ["problems", "gsm8k", "--split", "test", "--limit", "5",
                                       "--data-dir", str(data_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(out)
    assert df.height == 5 and df["answer"][0] == "18"
    assert 'source = "gsm8k"' in out.with_suffix(".toml").read_text()


def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "1"}\n{"question": "b", "answer": "2"}\n{"question": "c"\n')
    out = tmp_path / "p.parquet"
    result = CliRunner().invoke(main, ["problems", str(bad), "--out", str(out)])
    assert result.exit_code == 2
    assert "bad.jsonl:3" in result.output and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))


def test_unknown_source_and_model(tmp_path):
    result = CliRunner().invoke(main, ["problems", "nope"])
    assert result.exit_code == 2 and "nope" in result.output
    result = CliRunner().invoke(main, ["models", "check", "no-such-model"])
    assert result.exit_code == 2 and "unknown model 'no-such-model'" in result.output
