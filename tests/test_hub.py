"""`hf:` specs download where a hub is configured: the real huggingface_hub client against a local stand-in of the
hub's API (HF_ENDPOINT), with the gated-repository token (HF_TOKEN); without the token, one clear line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hub_stub import serve

CODE = """
from cotgen.models import resolve
from cotgen.models.load import load
src = resolve("hf:google/gemma-3-1b-it")
loaded = load(src)
print("loaded", loaded.config.num_layers, loaded.tokenizer.vocab_size)
"""


@pytest.fixture()
def hub(tmp_path):
    from cotgen.models import tiny

    server, seen = serve(tiny.hf_folder("tiny"), "google/gemma-3-1b-it", token="hf_secret")
    yield server, seen
    server.shutdown()


def _env(tmp_path, server, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    return {**env, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HOME": str(tmp_path / "hf"),
            "JAX_PLATFORMS": "cpu", **extra}


def test_a_gated_hub_model_downloads_with_hf_token_and_loads(tmp_path, hub):
    server, seen = hub
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                         env=_env(tmp_path, server, HF_TOKEN="hf_secret"), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "loaded 2 512" in out.stdout
    files = {path.rsplit("/", 1)[-1] for method, path, auth in seen if "/resolve/" in path and auth}
    assert {"config.json", "model.safetensors", "tokenizer.model"} <= files
    assert all(auth == "Bearer hf_secret" for _, path, auth in seen if "gemma-3-1b-it" in path)


def test_a_gated_hub_model_without_a_token_fails_in_one_line(tmp_path, hub):
    server, _ = hub
    out = subprocess.run([sys.executable, "-m", "cotgen.cli", "eval", "--model", "hf:google/gemma-3-1b-it",
                          "--backend", "tunix", "--source", "gsm8k", "--out", str(tmp_path / "e")],
                         capture_output=True, text=True, env=_env(tmp_path, server), timeout=600)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    line = [x for x in out.stderr.splitlines() if "hf:google/gemma-3-1b-it" in x][-1]
    assert "gated" in line and "HF_TOKEN" in line, line
    assert not (tmp_path / "e").exists()
