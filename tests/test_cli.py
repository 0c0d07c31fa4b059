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


@pytest.mark.parametrize("command", ["generate", "filter", "distill", "train", "rl", "eval", "models"])
def test_every_stage_command_exists(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output


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
