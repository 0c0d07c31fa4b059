"""The users' own path, checked here: no forced offline hub, rollout engines the pinned Tunix supports, the GPU
and Gemma 2 recipes' dry-runs, `--smoke` rewriting, progress where someone watches, reference fallback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from cotgen.errors import CotgenError
from cotgen.recipe import plan as plan_mod
from cotgen.recipe import runner, smoke

REPO = Path(__file__).resolve().parents[1]
RECIPES = {name: REPO / "recipes" / f"{name}.toml" for name in ("gemma3-1b-tpu", "gemma2-2b-tpu", "gemma3-1b-gpu")}


# ---------------------------------------------------------------------------------------------------- the hub
def test_nothing_forces_the_hub_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    plan = plan_mod.build(RECIPES["gemma3-1b-gpu"], out=tmp_path / "run")
    assert "HF_HUB_OFFLINE" not in runner.environment(plan)
    code = ("import os; from cotgen.engines import vllm_backend; vllm_backend.set_environment(); "
            "print(os.environ.get('HF_HUB_OFFLINE'))")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "None"


def test_a_user_set_offline_hub_is_kept_and_an_uncached_model_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plan = plan_mod.build(RECIPES["gemma3-1b-gpu"], out=tmp_path / "run")
    assert runner.environment(plan)["HF_HUB_OFFLINE"] == "1"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-m", "cotgen.cli", "eval", "--model", "hf:google/gemma-3-1b-it",
                          "--source", "gsm8k", "--out", str(tmp_path / "e"), "--backend", "tunix"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if "hf:google/gemma-3-1b-it" in line]
    assert lines and "HF_HUB_OFFLINE=1" in lines[-1] and "Traceback" not in out.stderr, out.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------- rollouts
def test_rollout_engines_are_asked_of_the_pinned_tunix():
    from cotgen.train import rollouts

    for family in ("gemma3", "gemma2"):
        for platform in ("cpu", "gpu", "tpu"):
            assert rollouts.problem("vanilla", family, platform) is None
        for platform in ("cpu", "gpu"):  # cotgen's own engine (cotgen.train.vllm_rollout)
            assert rollouts.problem("vllm", family, platform) is None
        assert "TPU only" in rollouts.problem("sglang_jax", family, "gpu")
        # Tunix 0.1.7 ships vllm_jax mappings for gemma4, llama3, qwen2, qwen3 only
        assert rollouts.has_mapping(family) is False
        assert "no vllm_jax weight mapping" in rollouts.problem("vllm", family, "tpu")
    with pytest.raises(CotgenError, match=r"^--rollout: .*use rollout = \"vanilla\""):
        rollouts.check("vllm", "gemma3", "tpu")


def test_rl_refuses_an_unsupported_rollout_before_loading_weights(tmp_path, data_dir, monkeypatch):
    import jax

    from cotgen.train import rl
    from cotgen.train.rl_config import RLConfig

    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")  # Tunix's vLLM engine: no Gemma 3 mapping

    cfg = RLConfig(model="tiny", source="gsm8k", split="train", data_dir=data_dir, limit=8, eval_size=2,
                   out=tmp_path / "rl", rollout="vllm", steps=1)
    with pytest.raises(CotgenError, match="use rollout = \"vanilla\""):
        rl.run(cfg)
    assert not (tmp_path / "rl" / "checkpoints").exists()


# ---------------------------------------------------------------------------------------------------- dry-runs
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_accelerator_recipe_passes_its_dry_run(name, tmp_path, embedded_folder, data_dir):
    from cotgen.recipe import dryrun

    lines = []
    ok = dryrun.run(plan_mod.build(RECIPES[name], out=tmp_path / "run"), echo=lines.append)
    text = "\n".join(lines)
    assert ok, text
    if name == "gemma3-1b-gpu":  # cotgen's vLLM rollouts, with the device split between vLLM and XLA
        assert "rollout 'vllm' for gemma3 on gpu: cotgen's vLLM engine" in text
        assert text.count("GPU memory split for --rollout vllm: vLLM 0.15 of 80 GiB") == 2
    else:
        assert "supported by the pinned Tunix" in text
    if name == "gemma2-2b-tpu":
        assert "gemma2_2b_it: 2.615 B parameters" in text and "vocab 256128" in text
    if name == "gemma3-1b-gpu":
        assert "target: gpu-a100-80gb (1 device(s), 80.0 GiB each)" in text
        assert "train: mesh fsdp=1 x tp=1 = 1 of 1 devices" in text


def test_dry_run_refuses_a_rollout_without_a_mapping_and_kd_across_families(tmp_path, embedded_folder, data_dir):
    from cotgen.recipe import dryrun

    text = RECIPES["gemma2-2b-tpu"].read_text().replace('rollout = "vanilla"', 'rollout = "vllm"')
    text = text.replace("[train]", '[distill]\nteacher = "hf:google/gemma-3-12b-it"\n\n[train]', 1)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    lines = []
    assert not dryrun.run(plan_mod.build(path, out=tmp_path / "run"), echo=lines.append)
    fails = [line for line in lines[0].splitlines() if "[FAIL]" in line] if len(lines) == 1 else []
    assert any("rollout 'vllm' for gemma2 on tpu" in f and "no vllm_jax weight mapping" in f for f in fails), fails
    assert any("(gemma3) and train.model hf:google/gemma-2-2b-it (gemma2)" in f for f in fails), fails


# ---------------------------------------------------------------------------------------------------- smoke
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_smoke_keeps_the_stage_graph_and_swaps_every_model_for_its_family_tiny(name, tmp_path):
    real = plan_mod.build(RECIPES[name], out=tmp_path / "real")
    fake = plan_mod.build(RECIPES[name], out=tmp_path / "smoke", smoke=True)
    assert [(s.name, s.command, s.after) for s in real.stages] == [(s.name, s.command, s.after) for s in fake.stages]
    tiny = "tiny-gemma2" if name.startswith("gemma2") else "tiny"
    for real_stage, s in zip(real.stages, fake.stages):
        c = s.config
        if s.command == "generate":
            assert c["teacher"] == "tiny"  # every recipe's teacher is Gemma 3 12B
            assert c["prompt_style"] == "chat" and c["limit"] == smoke.PROBLEMS
            assert c["tensor_parallel_size"] == c["data_parallel_size"] == 1
            assert c["enforce_eager"] is True  # sixteen tokens: compiling would take longer than sampling
        if s.command == "filter":
            assert c["reference_fallback"] is True
        if s.command == "train":
            assert c["model"] == tiny and c["steps"] == smoke.STEPS
            assert c.get("mesh") == real_stage.config.get("mesh")  # meshes are kept
        if s.command == "rl":
            assert c["steps"] == smoke.STEPS and c.get("mesh") == real_stage.config.get("mesh")
            assert c["num_generations"] == real_stage.config["num_generations"]
        if s.name.startswith("eval-base"):
            assert c["model"] == tiny and c["prompt_style"] == "chat"  # the -it student's style
    assert fake.smoke and any("was 'hf:google/gemma-3-12b-it'" in change for change in fake.smoke)
    env = runner.environment(fake)
    devices = 1 if name.endswith("gpu") else 8
    assert f"--xla_force_host_platform_device_count={devices}" in env["XLA_FLAGS"]
    assert env["JAX_PLATFORMS"] == "cpu"
    assert env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    assert env["JAX_COMPILATION_CACHE_DIR"] == os.environ["JAX_COMPILATION_CACHE_DIR"]  # the session's (conftest)
    assert "XLA_FLAGS" not in runner.environment(real) or "device_count" not in runner.environment(real)["XLA_FLAGS"]


def test_a_run_gives_its_stages_one_jax_cache_unless_the_user_has_one(tmp_path, monkeypatch):
    plan = plan_mod.build(RECIPES["gemma3-1b-tpu"], out=tmp_path / "run")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
    env = runner.environment(plan)
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "run" / "jax-cache")
    assert "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in env  # JAX's own threshold for real runs
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert runner.environment(plan)["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "mine")


def test_smoke_of_a_base_student_keeps_few_shot_for_the_base_eval(tmp_path):
    fake = plan_mod.build(REPO / "recipes" / "cpu-demo.toml", out=tmp_path / "smoke", smoke=True)
    base = next(s for s in fake.stages if s.name.startswith("eval-base"))
    assert base.config["model"] == "tiny" and base.config["prompt_style"] == "few_shot"


# ---------------------------------------------------------------------------------------------------- progress
def test_progress_is_on_where_someone_watches(monkeypatch, tmp_path):
    from cotgen import progress

    monkeypatch.setenv(progress.ENV, "1")
    assert progress.wanted()
    monkeypatch.setenv(progress.ENV, "0")
    assert not progress.wanted() and progress.bar(total=3) is None
    monkeypatch.delenv(progress.ENV)
    assert progress.wanted() == sys.stderr.isatty()
    assert progress.eta(10, 40, 20.0) == "ETA 1m00s" and progress.eta(0, 40, 1.0) == "ETA ?"
    monkeypatch.setattr(progress, "wanted", lambda: True)
    plan = plan_mod.build(RECIPES["gemma3-1b-gpu"], out=tmp_path / "run")
    assert runner.environment(plan)[progress.ENV] == "1"  # stages under a watched `cotgen run` draw bars


# ---------------------------------------------------------------------------------------------------- filter
def test_reference_fallback_trains_unkept_problems_on_their_worked_solution(tmp_path):
    from cotgen.filter.config import FilterConfig
    from cotgen.filter.run import run
    from cotgen.schemas import PROBLEM_SCHEMA, TRACE_SCHEMA

    problems = [dict(id=f"p{i}", source="toy", split="train", question=f"What is {i} + {i}?", answer=str(2 * i),
                     solution=f"{i} + {i} = <<{i}+{i}={2 * i}>>{2 * i}", metadata="{}") for i in range(1, 5)]
    problems[3]["solution"] = ""  # no worked solution: nothing to fall back on
    pl.DataFrame(problems, schema=PROBLEM_SCHEMA).write_parquet(tmp_path / "problems.parquet")
    rows = [{name: None for name in TRACE_SCHEMA.names()} | {
        "problem_id": p["id"], "sample_idx": 0, "source": "toy", "split": "train", "teacher": "tiny", "prompt": "p",
        "completion": "<reasoning>I cannot say what this is.</reasoning>\n<answer>-1</answer>",
        "finish_reason": "stop", "completion_tokens": 12} for p in problems]
    rows[0]["completion"] = "<reasoning>One and one more make two in all.</reasoning>\n<answer>2</answer>"
    (tmp_path / "traces").mkdir()
    pl.DataFrame(rows, schema=TRACE_SCHEMA).write_parquet(tmp_path / "traces" / "traces-all-00000.parquet")
    stats = run(FilterConfig(traces=tmp_path / "traces", out=tmp_path / "data", problems=tmp_path / "problems.parquet",
                             reference_fallback=True, val_fraction=0.0, min_tokens=1))
    assert stats["funnel"]["kept"] == 1 and stats["reference_fallback"] == 2
    train = pl.read_parquet(tmp_path / "data" / "train.parquet").sort("problem_id")
    assert train["problem_id"].to_list() == ["p1", "p2", "p3"]
    assert train["teacher"].to_list() == ["tiny", "reference", "reference"]
    assert train["completion"][1] == "<reasoning>2 + 2 = 4</reasoning>\n<answer>4</answer>"


# ---------------------------------------------------------------------------------------------------- preflight
def test_a_real_tpu_run_on_this_cpu_is_refused_before_any_work(tmp_path, data_dir):
    out = subprocess.run([sys.executable, "-m", "cotgen.cli", "run", str(RECIPES["gemma2-2b-tpu"]), "--out",
                          str(tmp_path / "run")], capture_output=True, text=True,
                         env={**os.environ, "COTGEN_DATA_DIR": str(data_dir)})
    assert out.returncode == 2, out.stderr[-2000:]
    assert "[target] profile = 'tpu-v5e-8' is a TPU target but JAX sees cpu devices" in out.stderr
    assert "--smoke" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()


def test_a_mesh_larger_than_the_devices_is_refused(tmp_path):
    text = (REPO / "recipes" / "cpu-demo.toml").read_text().replace("[train]\n", '[train]\nmesh = "fsdp=4"\n', 1)
    path = tmp_path / "mesh.toml"
    path.write_text(text)
    with pytest.raises(CotgenError, match=r"stage train: mesh = 'fsdp=4' needs 4 devices, JAX sees 1"):
        runner.preflight(plan_mod.build(path, out=tmp_path / "run"))


def test_samplers_stop_on_the_end_of_turn_of_the_models_family():
    from cotgen.engines.backend import stop_token_ids
    from cotgen.recipe.smoke import tiny_for

    assert stop_token_ids("hf:google/gemma-2-2b-it", "vllm") == (1, 107)
    assert stop_token_ids("hf:google/gemma-3-12b-it", "tunix") == (1, 106)
    assert tiny_for("/kaggle/input/gemma-2/flax/gemma2-2b-it/1") == "tiny-gemma2"  # not on this machine: by name
    assert tiny_for("hf:google/gemma-3-1b-it") == "tiny"


def test_vllm_stages_can_run_under_a_second_interpreter(tmp_path, monkeypatch):
    """On a TPU VM vllm-tpu lives in its own venv: [run] vllm_python / COTGEN_VLLM_PYTHON pick the interpreter of
    the stages that sample with vLLM, and preflight checks that interpreter has vLLM."""
    text = RECIPES["gemma3-1b-tpu"].read_text().replace("[run]\n", '[run]\nvllm_python = "/nowhere/bin/python"\n', 1)
    path = tmp_path / "two.toml"
    path.write_text(text)
    plan = plan_mod.build(path, out=tmp_path / "run")
    gen, train = plan.stage("generate.gsm8k"), plan.stage("train")
    assert runner.argv(plan, gen, "run")[0] == "/nowhere/bin/python"
    assert runner.argv(plan, train, "run")[0] == sys.executable
    with pytest.raises(CotgenError, match=r"stage generate.gsm8k: .*not installed in /nowhere/bin/python: vllm-tpu "
                                          r"cannot share an environment with google-tunix 0.1.7"):
        runner.preflight(plan)
    monkeypatch.setenv("COTGEN_VLLM_PYTHON", sys.executable)
    assert runner.argv(plan, gen, "run")[0] == sys.executable
    smoke_plan = plan_mod.build(path, out=tmp_path / "smoke", smoke=True)
    monkeypatch.delenv("COTGEN_VLLM_PYTHON")
    assert runner.argv(smoke_plan, smoke_plan.stage("generate.gsm8k"), "run")[0] == sys.executable
