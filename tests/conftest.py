"""Shared test set-up: the real data beside the repository, and the slow marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "gsm8k" / "test.jsonl").is_file():
        pytest.fail(f"reference data not found at {DATA_DIR} (CI and developers have ../shared beside the repo)")
    return DATA_DIR


@pytest.fixture(scope="session")
def embedded_folder() -> Path:
    """The prepared embedded Gemma 3 270M (converted once per cache)."""
    from cotgen.models.prepare import prepare

    return prepare()


@pytest.fixture(autouse=True)
def _data_env(monkeypatch):
    monkeypatch.setenv("COTGEN_DATA_DIR", os.environ.get("COTGEN_DATA_DIR", str(DATA_DIR)))
