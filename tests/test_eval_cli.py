"""`cotgen eval` end to end: bad input fails before any compute; the tiny model through the tunix backend; the
embedded Gemma 3 270M through vLLM (slow)."""

import json
import subprocess
import sys

import polars as pl
import pytest
from click.testing import CliRunner

from cotgen.cli import main
from cotgen.config import resolve
from cotgen.eval import compare, engine, metrics
from cotgen.eval.config import EvalConfig
from cotgen.eval.records import read_samples
from cotgen.eval.report import FILES

GSM8K_TEST_SHA256 = "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"  # shared/data/README.md


def test_help_imports_no_heavy_module():
    code = ("import sys; from cotgen.cli import main\n"
            "try: main(['eval', '--help'])\nexcept SystemExit: pass\n"
            "print([m for m in ('jax', 'vllm', 'tunix', 'torch', 'polars', 'matplotlib', 'scipy', 'numpy') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--compare A B" in out and out.strip().endswith("[]"), out


@pytest.fixture
def no_engine(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("an engine was started for bad input")

    monkeypatch.setattr(engine, "sample", refuse)


def _folder(tmp_path, files: dict[str, str | bytes]):
    folder = tmp_path / "model"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(folder)


BAD_INPUT = {
    "k0": (["--k", "0"], "--k must be >= 1, got 0"),
    "k_at_t0": (["--k", "4", "--temperature", "0"], "needs --temperature > 0"),
    "source": (["--source", "nope"], "unknown source 'nope'"),
    "split": (["--split", "validation"], "gsm8k has no split 'validation'"),
    "shots_k": (["--shots-k", "9"], "exemplar set 'gsm8k' has 8 exemplars; asked for k=9"),
    "shots": (["--shots", "nope"], "unknown exemplar set 'nope'"),
    "model": (["--model", "no-such-model"], "unknown model 'no-such-model'"),
    "no_config": (["--model", {}], "has no config.json"),
    "bad_config": (["--model", {"config.json": "{not json"}], "does not load: config.json is unreadable"),
    "no_weights": (["--model", {"config.json": "{}", "tokenizer.model": "x"}], "no *.safetensors weights"),
    "no_tokenizer": (["--model", {"config.json": "{}", "model.safetensors": "x"}], "no tokenizer.model"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_line_before_any_compute(case, tmp_path, no_engine):
    args, message = BAD_INPUT[case]
    args = [_folder(tmp_path, a) if isinstance(a, dict) else a for a in args]
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, ["eval", "--backend", "tunix", "--limit", "2", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_defaults_resolved_for_base_models_and_math():
    from cotgen.engines.config import default_dtype
    from cotgen.eval.config import resolved

    gsm = resolved(EvalConfig(model="tiny", backend="tunix"))
    assert (gsm.prompt_style, gsm.shots, gsm.shots_k, gsm.dtype, gsm.k) == ("few_shot", "gsm8k", 8, "float32", 1)
    math = resolved(EvalConfig(model="gemma-3-270m", source="math500"))
    assert (math.prompt_style, math.shots, math.shots_k, math.dtype) == ("few_shot", "math", 4, default_dtype("vllm"))
    served = resolved(EvalConfig(model="my-student", backend="openai", shots_k=2))
    assert (served.prompt_style, served.shots_k) == ("chat", 2)  # not a known base model: the student prompt


def test_unknown_config_key(tmp_path, no_engine):
    cfg = tmp_path / "run.toml"
    cfg.write_text('model = "tiny"\nkk = 3\n')
    result = CliRunner().invoke(main, ["eval", "--config", str(cfg)])
    assert result.exit_code == 2 and "field 'kk': unknown key" in result.output


def test_a_folder_that_does_not_load_is_a_clear_error(tmp_path):
    folder = _folder(tmp_path, {"config.json": '{"model_type": "gemma3_text"}', "model.safetensors": b"\0" * 8,
                                "tokenizer.model": b"not a sentencepiece model"})
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, ["eval", "--model", folder, "--backend", "tunix", "--limit", "1",
                                       "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"model '{folder}' did not load with the tunix backend" in result.output
    assert not out.exists()


def _check_run(out, problems: int, k: int, max_tokens: int):
    """Every report file exists and they agree with each other."""
    assert {p.name for p in out.iterdir()} == set(FILES)
    doc = json.loads((out / "metrics.json").read_text())
    samples = read_samples(out / "samples.parquet")
    counts = dict(samples.group_by("pass").len().iter_rows())
    assert counts == ({"greedy": problems, "sampled": problems * k} if k > 1 else {"greedy": problems})
    assert samples["completion_tokens"].max() <= max_tokens
    assert samples.filter(pl.col("pass") == "greedy")["temperature"].unique().to_list() == [0.0]
    recomputed = json.loads(json.dumps(metrics.summarize(samples)).replace("NaN", "null"))
    assert doc["metrics"] == recomputed
    assert doc["metrics"]["problems"] == problems
    per = pl.read_parquet(out / "problems.parquet")
    assert per["problem_id"].to_list() == samples.filter(pl.col("pass") == "greedy")["problem_id"].to_list()
    for key in ("prompt_template", "prompt_example", "greedy_sampling", "extraction", "verifier", "data_sha256"):
        assert doc["protocol"][key], key
    assert doc["protocol"]["prompt_example"] in (out / "summary.md").read_text()
    return doc, samples


def test_tiny_model_end_to_end_tunix(tmp_path, data_dir):
    out = tmp_path / "eval"
    args = ["eval", "--model", "tiny", "--backend", "tunix", "--source", "gsm8k", "--split", "test", "--limit", "3",
            "--k", "2", "--max-tokens", "8", "--data-dir", str(data_dir), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"3 problems -> {out}: greedy/pass@1" in result.output
    doc, samples = _check_run(out, problems=3, k=2, max_tokens=8)
    p = doc["protocol"]
    assert (p["model"], p["backend"], p["prompt_style"], p["shots"]) == ("tiny", "tunix", "few_shot", "gsm8k")
    assert p["k"] == 2
    assert p["data_sha256"] == GSM8K_TEST_SHA256
    assert p["prompt_example"].startswith("Question: There are 15 trees")
    assert p["sampled_sampling"]["stop"] == ["\n\nQuestion:", "Question:"]
    assert samples.filter(pl.col("pass") == "sampled")["sample_idx"].unique().sort().to_list() == [0, 1]
    cfg = resolve(EvalConfig, out / "config.toml")  # the written config repeats the run
    assert (cfg.model, cfg.k, cfg.limit, cfg.prompt_style, cfg.out) == ("tiny", 2, 3, "few_shot", out)
    same = compare.compare(out, out)
    assert same.shared == 3 and all(r["diff"] == 0 and not r["excludes_zero"] for r in same.rows)


@pytest.mark.slow
def test_embedded_270m_gsm8k_vllm(tmp_path, data_dir, embedded_folder):
    out = tmp_path / "eval"
    args = ["eval", "--model", "gemma-3-270m", "--backend", "vllm", "--source", "gsm8k", "--split", "test",
            "--limit", "5", "--k", "2", "--max-tokens", "64", "--max-model-len", "2048", "--data-dir", str(data_dir),
            "--out", str(out)]
    # a real process: vLLM needs real file descriptors, which CliRunner's captured streams lack
    result = subprocess.run([sys.executable, "-m", "cotgen.cli", *args], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "5 problems -> " in result.stdout
    doc, samples = _check_run(out, problems=5, k=2, max_tokens=64)
    assert doc["protocol"]["prompt_style"] == "few_shot"  # the base model's default, recorded
    assert doc["protocol"]["model_info"]["path"] == str(embedded_folder)
    assert (samples["completion_tokens"] > 0).all()
    assert samples["completion"].str.contains("<reasoning>").any()  # the exemplars' format is picked up
    assert 0 <= doc["metrics"]["greedy/pass@1"] <= 1
    assert doc["timings"]["sampled/startup_s"] < 5  # the sampled pass reuses the greedy pass's engine


def test_vllm_cpu_samples_in_float32_without_bf16_matmuls(tmp_path, monkeypatch):
    from cotgen.engines import config

    flags = tmp_path / "cpuinfo"
    flags.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert not config.cpu_has_bf16(str(flags))
    flags.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    assert config.cpu_has_bf16(str(flags))
    assert config.cpu_has_bf16(str(tmp_path / "missing"))  # unreadable: vLLM's own default
    monkeypatch.setattr(config, "vllm_cpu_build", lambda: True)
    monkeypatch.setattr(config, "cpu_has_bf16", lambda: False)
    assert (config.default_dtype("vllm"), config.default_dtype("tunix"), config.default_dtype("openai")) == \
        ("float32", "float32", "bfloat16")
    monkeypatch.setattr(config, "cpu_has_bf16", lambda: True)
    assert config.default_dtype("vllm") == "bfloat16"
    monkeypatch.setattr(config, "vllm_cpu_build", lambda: False)  # the GPU/TPU build
    monkeypatch.setattr(config, "cpu_has_bf16", lambda: False)
    assert config.default_dtype("vllm") == "bfloat16"
