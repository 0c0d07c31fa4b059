"""Slow tests of `cotgen generate` with the real Gemma 3 270M: tunix, vllm (offline engine, killed and
resumed) and openai against a real vLLM OpenAI-compatible server that is killed mid-run and restarted.

Kept small (a few problems, n=2, 24 tokens, 2-shot prompts, eager vLLM); runs go through the `cotgen` console
script in subprocesses, as a user would run them, so a SIGKILL hits exactly what a user's kill would.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from cotgen.engines.backend import request_seed
from cotgen.engines.config import default_dtype
from cotgen.generate import store

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("data_dir")]  # conftest fails clearly without it
COMMON = ["--source", "gsm8k", "--split", "train", "--data-dir", str(DATA), "--n", "2", "--max-tokens", "24",
          "--shots-k", "2", "--seed", "0", "--batch-size", "1", "--enforce-eager"]


def cotgen(*args) -> list[str]:
    script = Path(sys.executable).parent / "cotgen"
    head = [str(script)] if script.is_file() else [sys.executable, "-m", "cotgen.cli"]
    return [*head, "generate", *map(str, args)]


def keys(df: pl.DataFrame) -> list[tuple[str, int]]:
    return sorted(df.select("problem_id", "sample_idx").iter_rows())


def finished_rows(out: Path) -> pl.DataFrame:
    rows = pl.concat([pl.read_parquet(f) for f in store.chunk_files(out)])
    return rows.filter(pl.col("error").is_null())


def expected(limit: int, n: int = 2) -> list[tuple[str, int]]:
    from cotgen.sources import load_problems

    ids = load_problems("gsm8k", "train", data_dir=DATA, limit=limit)["id"]
    return sorted((i, s) for i in ids for s in range(n))


def wait_for_chunk(out: Path, proc: subprocess.Popen, timeout: float = 900) -> None:
    end = time.monotonic() + timeout
    while not store.chunk_files(out):
        assert proc.poll() is None, f"run ended (rc {proc.returncode}) before its first chunk"
        assert time.monotonic() < end, "no chunk committed in time"
        time.sleep(0.2)


def test_tunix_backend_270m(tmp_path):
    from cotgen.generate.config import GenerateConfig
    from cotgen.generate.run import run

    cfg = GenerateConfig(teacher="gemma-3-270m", backend="tunix", source="gsm8k", data_dir=DATA, limit=2, n=1,
                         max_tokens=16, shots_k=2, batch_size=2, out=tmp_path / "t", logprobs=1)
    m = run(cfg)
    df = store.read_traces(tmp_path / "t")
    assert keys(df) == expected(2, 1) and m["complete"]
    assert (df["completion_tokens"] <= 16).all() and (df["prompt_tokens"] > 100).all()
    assert any(c.lstrip().startswith("<reasoning>") for c in df["completion"])  # follows the 2-shot format
    assert all(len(lp) == t for lp, t in zip(df["logprobs"], df["completion_tokens"]))


# ---- vllm offline engine --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_reference(tmp_path_factory):
    """An uninterrupted vllm-backend run through the console script: 4 problems x 2 samples."""
    out = tmp_path_factory.mktemp("vllm") / "reference"
    start = time.perf_counter()
    proc = subprocess.run(cotgen("--backend", "vllm", *COMMON, "--limit", 4, "--out", out),
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"vllm reference run: {time.perf_counter() - start:.1f}s")
    return out


def test_vllm_backend_270m(vllm_reference):
    df = store.read_traces(vllm_reference)
    assert keys(df) == expected(4)
    assert set(df["finish_reason"]) <= {"stop", "length"} and (df["completion_tokens"] <= 24).all()
    assert df["backend"].unique().to_list() == ["vllm"] and df["completion"].str.len_chars().min() > 0
    for pid, idx, seed in df.select("problem_id", "sample_idx", "seed").iter_rows():
        assert seed == request_seed(0, pid) + idx
    import json

    m = json.loads((vllm_reference / "manifest.json").read_text())
    assert m["complete"] and m["throughput"]["completion_tokens_per_s"] > 0
    print(f"vllm startup {m['timings_s']['startup']}s, {m['throughput']['completion_tokens_per_s']} tok/s")


def _descendants(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids + [d for k in kids for d in _descendants(k)]


def test_vllm_run_killed_at_random_point_resumes_to_same_set(vllm_reference, tmp_path):
    out = tmp_path / "killed"
    cmd = cotgen("--backend", "vllm", *COMMON, "--limit", 4, "--out", out)
    delay = random.Random().uniform(0, 2.0)
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        wait_for_chunk(out, proc)
        time.sleep(delay)
        children = _descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    leftovers = [p for p in children if Path(f"/proc/{p}").exists()]
    for pid in leftovers:  # started by the killed run: end them so they cannot skew later tests
        os.kill(pid, signal.SIGKILL)
    before = len(store.chunk_files(out))
    print(f"killed {delay:.2f}s after the first chunk; {before} chunk(s) committed; orphans: {leftovers}")
    assert not leftovers, "the killed run left engine processes behind"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert keys(store.read_traces(out)) == keys(store.read_traces(vllm_reference))
    assert keys(finished_rows(out)) == expected(4)  # each key exactly once across all chunks


# ---- openai backend against a real vLLM server ----------------------------------------------------------


class VllmServer:
    """`python -m vllm.entrypoints.openai.api_server` for the 270M on 127.0.0.1, in its own process group."""

    def __init__(self, log: Path):
        from cotgen.models.prepare import prepare

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.folder, self.log, self.proc = prepare(), log, None
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 900) -> float:
        from cotgen.engines.vllm_backend import cpu_build

        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
               "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": str(len(os.sched_getaffinity(0)))}
        if cpu_build():
            env["VLLM_TARGET_DEVICE"] = "cpu"
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.folder),
               "--served-model-name", "gemma-3-270m", "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", default_dtype("vllm"), "--max-model-len", "2048", "--enforce-eager", "--seed", "0",
               "--no-enable-chunked-prefill", "--max-num-batched-tokens", "8192"]
        start = time.perf_counter()
        with open(self.log, "a") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        while time.perf_counter() - start < timeout:
            assert self.proc.poll() is None, f"server exited: {self.log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=2).read()
                return time.perf_counter() - start
            except OSError:
                time.sleep(1)
        raise AssertionError("server did not come up")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its engine process
            self.proc.wait()


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    server = VllmServer(tmp_path_factory.mktemp("server") / "server.log")
    print(f"vLLM server ready in {server.start():.1f}s")
    yield server
    server.kill()


def test_openai_backend_survives_server_kill_and_restart(vllm_server, tmp_path):
    out = tmp_path / "openai"
    cmd = cotgen("--backend", "openai", "--teacher", "gemma-3-270m", "--base-url", vllm_server.url, *COMMON,
                 "--limit", 6, "--concurrency", 2, "--max-retries", 2, "--request-timeout", 60, "--out", out)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_chunk(out, proc)
    vllm_server.kill()
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 2, output[-3000:]
    assert "run the same command again" in output
    kept = keys(store.read_traces(out))
    assert kept and len(kept) < 12
    print(f"server killed: {len(kept)} samples kept; restarted in {vllm_server.start():.1f}s")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert keys(store.read_traces(out)) == expected(6)
    assert keys(finished_rows(out)) == expected(6)  # nothing lost, nothing duplicated
    assert set(kept) <= set(keys(store.read_traces(out)))
