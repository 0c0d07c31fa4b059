"""Shared test set-up: the real data beside the repository, and the slow marker."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data"

# One JAX compilation cache for the whole session, in-process and in every subprocess (set before anything
# imports JAX): the tests build the same tiny programs many times over. Removed at the end of the session.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="cotgen-test-jax-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    _OWN_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"]
else:
    _OWN_CACHE = None


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The reference data beside the repository. The one place a missing ../shared/data is handled: every test
    that reads it asks for this fixture (or `pytest.mark.usefixtures("data_dir")`) and fails here, naming the
    folder; none skips."""
    if not (DATA_DIR / "gsm8k" / "test.jsonl").is_file():
        pytest.fail(f"reference data not found at {DATA_DIR} (CI and developers have ../shared beside the repo)")
    return DATA_DIR


@pytest.fixture(scope="session")
def gsm8k_rows(data_dir):
    """rows(n): the n shortest of the first 200 GSM8K train problems as prompt/completion rows in the student
    format (the reference solution, <<calculator>> notes removed, as the reasoning)."""
    import json
    import re

    from cotgen import prompts

    def rows(n: int) -> list[dict]:
        items = [json.loads(line) for line in (data_dir / "gsm8k" / "train.jsonl").read_text().splitlines()[:200]]
        items.sort(key=lambda it: len(it["question"]) + len(it["answer"]))
        out = []
        for item in items[:n]:
            reasoning, _, answer = item["answer"].rpartition("####")
            out.append({"prompt": prompts.student_prompt(item["question"]),
                        "completion": prompts.student_target(re.sub(r"<<[^>]*>>", "", reasoning),
                                                             answer.strip())})
        return out

    return rows


@pytest.fixture(scope="session")
def embedded_folder() -> Path:
    """The prepared embedded Gemma 3 270M (converted once per cache)."""
    from cotgen.models.prepare import prepare

    return prepare()


@pytest.fixture(autouse=True)
def _data_env(monkeypatch):
    monkeypatch.setenv("COTGEN_DATA_DIR", os.environ.get("COTGEN_DATA_DIR", str(DATA_DIR)))
