"""`cotgen rl` configuration and CLI: defaults, errors before any compute, resume identity, light imports."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from cotgen.cli import main
from cotgen.config import resolve
from cotgen.errors import CotgenError, InputError
from cotgen.train.rl_config import RESUMABLE, RLConfig, identity


def test_defaults_depend_on_algo_and_method():
    cfg = RLConfig()
    got = (cfg.beta, cfg.epsilon_high, cfg.lora_alpha, cfg.lr, cfg.length_buffer, cfg.kl_estimator)
    assert got == (0.04, 0.2, 32.0, 1e-5, 64, "low_var_kl")
    dapo = RLConfig(algo="dapo", lora_rank=0)
    assert (dapo.beta, dapo.epsilon_high, dapo.lr, dapo.method) == (None, 0.28, 1e-6, "full")


@pytest.mark.parametrize("kw, match", [
    (dict(num_generations=1), "num-generations must be >= 2"),
    (dict(algo="ppo"), "unknown --algo"),
    (dict(rollout="sglang"), "unknown --rollout"),
    (dict(algo="dapo", beta=0.1), "dapo has no KL"),
    (dict(epsilon=0.3, epsilon_high=0.2), "epsilon"),
    (dict(temperature=0.0), "temperature"),
    (dict(max_tokens=16, length_buffer=32), "length-buffer"),
    (dict(pass_rate_min=0.5, pass_rate_max=0.5), "pass-rate"),
    (dict(format_weight=1.0), "wrong answer outscore a correct one"),
    (dict(mesh="dp=2"), "--mesh"),
    (dict(mesh="fsdp=4", batch_size=1, num_generations=2), "multiple of the mesh"),
    (dict(steps=0), "steps"),
])
def test_bad_values_are_clear_errors(kw, match):
    with pytest.raises(CotgenError, match=match):
        RLConfig(**kw)


def test_toml_values_and_unknown_keys(tmp_path):
    path = tmp_path / "rl.toml"
    path.write_text('algo = "gspo"\nnum_generations = 8\nout = "runs/a"\n')
    cfg = resolve(RLConfig, path, {"steps": 3})
    assert (cfg.algo, cfg.num_generations, cfg.steps, str(cfg.out)) == ("gspo", 8, 3, "runs/a")
    path.write_text("num_generation = 8\n")
    with pytest.raises(InputError, match="unknown key"):
        resolve(RLConfig, path)


def test_identity_ignores_only_what_a_resume_may_change():
    a = RLConfig(steps=10, eval_every=2, out="x")
    assert identity(a) == identity(RLConfig(steps=20, eval_every=5, out="y", resume=True))
    assert identity(a) != identity(RLConfig(num_generations=8))
    assert "steps" in RESUMABLE and "num_generations" not in RESUMABLE


@pytest.mark.parametrize("args, match", [
    (["--num-generations", "1"], "num-generations must be >= 2"),
    (["--format-weight", "2"], "outscore"),
    (["--algo", "dapo", "--beta", "0.1"], "dapo has no KL"),
])
def test_cli_reports_config_errors_in_one_line(args, match):
    result = CliRunner().invoke(main, ["rl", "--out", "unused", *args])
    assert result.exit_code == 2, result.output
    assert match in result.output and "Traceback" not in result.output


def test_cli_help_imports_no_heavy_library():
    code = ("import sys; from click.testing import CliRunner; from cotgen.cli import main; "
            "r = CliRunner().invoke(main, ['rl', '--help']); assert r.exit_code == 0, r.output; "
            "assert 'GRPO' in r.output; "
            "print(sorted(m for m in ('jax', 'tunix', 'flax', 'polars', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_shaping_with_a_std_normalised_algorithm_is_warned_of():
    from cotgen.train.rl_config import shaping_warning

    assert "get full-size advantages" in shaping_warning(RLConfig(algo="grpo"))  # format 0.2 + length 0.1
    assert shaping_warning(RLConfig(algo="drgrpo")) is None
    assert shaping_warning(RLConfig(algo="gspo", format_weight=0.0, length_weight=0.0)) is None
