"""Fast tests of `cotgen generate`: the tunix backend with the tiny model, the output store, the openai
backend against a scripted local HTTP server, and bad input."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import openai_stub
import polars as pl
import pytest
from click.testing import CliRunner

from cotgen import prompts
from cotgen.cli import main
from cotgen.engines.backend import Request, Sampling, request_seed, runs
from cotgen.errors import CotgenError
from cotgen.generate import store
from cotgen.generate.config import GenerateConfig, parse_shard
from cotgen.generate.run import in_shard, run
from cotgen.schemas import TRACE_SCHEMA

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.usefixtures("data_dir")  # conftest fails clearly without ../shared/data


def tiny(out: Path, **kw) -> GenerateConfig:
    values = {"teacher": "tiny", "backend": "tunix", "source": "gsm8k", "split": "train", "data_dir": DATA,
              "limit": 3, "n": 2, "max_tokens": 8, "shots_k": 1, "batch_size": 1, "out": out}
    return GenerateConfig(**{**values, **kw})


def keys(df: pl.DataFrame) -> list[tuple[str, int]]:
    return sorted(df.select("problem_id", "sample_idx").iter_rows())


def raw(out: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(f) for f in store.chunk_files(out)])


def expected_keys(limit: int, n: int) -> list[tuple[str, int]]:
    from cotgen.sources import load_problems

    ids = load_problems("gsm8k", "train", data_dir=DATA, limit=limit)["id"]
    return sorted((i, s) for i in ids for s in range(n))


@needs_data
def test_records_resume_and_refusal(tmp_path):
    out = tmp_path / "traces"
    m = run(tiny(out))
    df = store.read_traces(out)
    assert df.schema == TRACE_SCHEMA
    assert keys(df) == expected_keys(3, 2) and m["complete"] and m["counts"]["generated"] == 6
    assert set(df["finish_reason"]) <= {"stop", "length"} and df["error"].null_count() == 6
    assert (df["completion_tokens"] <= 8).all() and (df["prompt_tokens"] > 0).all()
    assert df["teacher"].unique().to_list() == ["tiny"]
    assert df["prompt_style"].unique().to_list() == ["few_shot"]
    q = pl.read_ndjson(DATA / "gsm8k" / "train.jsonl", n_rows=1)["question"][0]
    assert df["prompt"][0] == prompts.teacher_prompt(q, style="few_shot", shots="gsm8k", k=1)
    assert df["answer"][0] == "72"
    assert len(store.chunk_files(out)) == 3  # batch_size 1: one chunk per problem
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["params"]["n"] == 2 and saved["counts"]["finished"] == 6
    assert 'prompt_style = "few_shot"' in (out / "config.toml").read_text()

    before = {f.name: f.stat().st_mtime_ns for f in store.chunk_files(out)}
    again = run(tiny(out, batch_size=2))  # batch size may change between runs
    assert again["counts"]["generated"] == 0 and again["complete"]
    assert {f.name: f.stat().st_mtime_ns for f in store.chunk_files(out)} == before

    with pytest.raises(CotgenError, match="temperature=0.8 .now 0.5."):
        run(tiny(out, temperature=0.5))
    result = CliRunner().invoke(main, ["generate", "--config", str(out / "config.toml"), "--n", "3"])
    assert result.exit_code == 2 and "n=2 (now 3)" in result.output


@needs_data
def test_interrupted_run_completes_exactly_once(tmp_path):
    out = tmp_path / "traces"
    first = run(tiny(out, limit=4), max_chunks=2)  # a crash after two committed chunks
    assert first["counts"]["finished"] == 4 and not first["complete"]
    (out / ".traces-all-00002.parquet.abc.tmp").write_bytes(b"half a file")  # what a kill mid-write leaves
    second = run(tiny(out, limit=4))
    assert second["counts"] == {"expected": 8, "finished": 8, "done_before": 4, "generated": 4, "errors": 0}
    assert keys(raw(out)) == expected_keys(4, 2)  # no key twice, none missing
    assert not list(out.glob(".traces-*.tmp"))


@needs_data
def test_error_rows_are_retried_and_partial_problems_filled(tmp_path):
    out = tmp_path / "traces"
    run(tiny(out, limit=2))
    first = store.chunk_files(out)[0]
    df = pl.read_parquet(first)
    broken = df.with_columns(
        error=pl.when(pl.col("sample_idx") == 1).then(pl.lit("HTTP 503")).otherwise(pl.col("error")))
    broken.write_parquet(first)  # sample 1 of problem 0 failed last time
    m = run(tiny(out, limit=2))
    assert m["counts"]["generated"] == 1
    assert keys(store.read_traces(out)) == expected_keys(2, 2)
    assert store.read_traces(out)["error"].null_count() == 4
    assert store.read_traces(out, keep_errors=True).height == 4


@needs_data
def test_shards_split_problems_disjointly(tmp_path):
    out = tmp_path / "traces"
    parts = [run(tiny(out, limit=6, n=1, shard=f"{i}/3")) for i in range(3)]
    assert sum(p["problems"]["count"] for p in parts) == 6
    names = {f.name.split("-")[1] for f in store.chunk_files(out)}
    assert names <= {"s0of3", "s1of3", "s2of3"}
    assert {p.name for p in out.glob("manifest*.json")} == {f"manifest-s{i}of3.json" for i in range(3)}
    assert keys(raw(out)) == expected_keys(6, 1)
    whole = run(tiny(out, limit=6, n=1))  # the unsharded run sees every shard's work as done
    assert whole["counts"]["generated"] == 0 and whole["complete"]
    ids = [f"{i:016x}" for i in range(3000)]
    owners = [[i for i in range(4) if in_shard(pid, f"{i}/4")] for pid in ids]
    assert all(len(o) == 1 for o in owners)
    assert min(sum(o == [i] for o in owners) for i in range(4)) > 600


def test_seeds_and_runs():
    assert runs((0, 1, 2, 5, 7, 6)) == [(0, 3), (5, 3)]
    assert request_seed(0, "a") == request_seed(0, "a") != request_seed(1, "a")
    assert 0 <= request_seed(3, "b") < 2**31 - 2**16
    assert parse_shard("1/4") == (1, 4)


@pytest.mark.parametrize("args, message", [
    (["--source", "nope"], "unknown source 'nope'"),
    (["--shard", "4/4"], "bad --shard '4/4'"),
    (["--shard", "x"], "bad --shard 'x'"),
    (["--teacher", "no-such-model"], "unknown model 'no-such-model'"),
    (["--n", "0"], "--n must be >= 1"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    base = ["generate", "--backend", "tunix", "--data-dir", str(DATA), "--out", str(tmp_path / "o"),
            "--limit", "1"]
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_unknown_backend_in_config(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('backend = "ollama"\n')
    result = CliRunner().invoke(main, ["generate", "--config", str(cfg)])
    assert result.exit_code == 2 and "unknown backend 'ollama'" in result.output


def test_cli_imports_no_heavy_modules():
    code = ("import sys, cotgen.cli, cotgen.generate.cli; "
            "print(sorted(m for m in ('jax', 'vllm', 'tunix', 'polars', 'torch', 'openai') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


# ---- openai backend against a scripted server -----------------------------------------------------------


class _Script(openai_stub.Scripted):
    """Answers /v1/completions from a per-prompt script: 'ok', 'garbage', '500', '429', '400'."""

    script: ClassVar[dict] = {}
    calls: ClassVar[list] = []

    def do_POST(self):
        body = self._body()
        self.calls.append(body)
        plan = self.script[body["prompt"]]
        what = plan.pop(0) if len(plan) > 1 else plan[0]
        if what == "garbage":
            return self._send(200, "{not json")
        if what in ("500", "429", "400"):
            return self._send(int(what), {"error": {"message": what}})
        text = f"seed {body.get('seed')}"
        self._send(200, {"id": "c", "object": "text_completion", "created": 0, "model": "teacher",
                         "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})


@pytest.fixture
def scripted_server():
    with openai_stub.serve(_Script) as served:
        yield served


def test_openai_backend_retries_then_records_errors(scripted_server, monkeypatch):
    from cotgen.engines import openai_backend
    from cotgen.engines.openai_backend import OpenAIBackend

    monkeypatch.setattr(openai_backend, "BACKOFF_S", 0.01)
    url, handler = scripted_server
    handler.calls.clear()
    handler.script = {"p-ok": ["ok"], "p-flaky": ["500", "garbage", "429", "ok"], "p-down": ["500"],
                      "p-bad": ["400"]}
    cfg = GenerateConfig(teacher="teacher", backend="openai", base_url=url, max_retries=3, concurrency=2)
    backend = OpenAIBackend(cfg.teacher, cfg, Sampling(2, 0.8, 1.0, 16, 0, ("Question:",), (1, 106)))
    reqs = [Request(p, p, (0, 1) if p == "p-ok" else (0,), 100) for p in handler.script]
    samples = {(s.problem_id, s.sample_idx): s for s in backend.generate(reqs)}
    backend.close()
    assert samples["p-ok", 0].completion == "seed 100" and samples["p-ok", 1].completion == "seed 101"
    assert samples["p-ok", 1].seed == 101 and samples["p-ok", 1].completion_tokens == 3
    assert samples["p-flaky", 0].error is None and samples["p-flaky", 0].finish_reason == "stop"
    assert "after 4 attempts" in samples["p-down", 0].error and samples["p-down", 0].finish_reason == "error"
    assert "400" in samples["p-bad", 0].error
    assert sum(c["prompt"] == "p-bad" for c in handler.calls) == 1  # 4xx: not retried
    assert all(c["n"] == 1 and c["stop"] == ["Question:"] for c in handler.calls)


def test_engine_seeding_sends_no_seed_and_records_none(scripted_server):
    from cotgen.engines.openai_backend import OpenAIBackend
    from cotgen.generate.run import sampling_of

    url, handler = scripted_server
    handler.calls.clear()
    handler.script = {"p": ["ok"]}
    cfg = GenerateConfig(teacher="teacher", backend="openai", base_url=url, seeding="engine", n=2,
                         prompt_style="chat")
    backend = OpenAIBackend(cfg.teacher, cfg, sampling_of(cfg))
    samples = backend.generate([Request("p", "p", (0, 1), 100)])
    backend.close()
    assert [s.seed for s in samples] == [None, None] and [s.completion for s in samples] == ["seed None"] * 2
    assert all(c.get("seed") is None for c in handler.calls) and len(handler.calls) == 2


def test_seeding_values():
    assert GenerateConfig(seeding="request").seeding is None  # the default, stored as None (old records stay valid)
    assert GenerateConfig(seeding="engine").identity()["seeding"] == "engine"
    with pytest.raises(CotgenError, match="--seeding"):
        GenerateConfig(seeding="batch")


def test_openai_backend_unreachable_server_fails_before_work():
    from cotgen.engines.openai_backend import OpenAIBackend

    cfg = GenerateConfig(teacher="t", backend="openai", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(CotgenError, match="cannot reach an OpenAI-compatible server"):
        OpenAIBackend(cfg.teacher, cfg, Sampling(1, 0.8, 1.0, 8, 0, (), (1,)))


def test_openai_backend_unknown_model(scripted_server):
    from cotgen.engines.openai_backend import OpenAIBackend

    url, _ = scripted_server
    cfg = dataclasses.replace(GenerateConfig(backend="openai", base_url=url), teacher="other")
    with pytest.raises(CotgenError, match="does not serve 'other'"):
        OpenAIBackend(cfg.teacher, cfg, Sampling(1, 0.8, 1.0, 8, 0, (), (1,)))
