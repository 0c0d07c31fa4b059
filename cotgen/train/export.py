"""`cotgen export`: a training checkpoint -> a Hugging Face safetensors folder or a Tunix-loadable orbax
checkpoint.

Both start from the same plain weights: the run's base model with its checkpoint restored
(`cotgen.runs.model_from_run`) and LoRA adapters merged (`cotgen.models.lora.merged_params`; QLoRA adapters are
merged into the unquantised base).

Both families, Gemma 3 and Gemma 2 (`LoadedModel.family`):

safetensors: `model.safetensors` under HF `Gemma3ForCausalLM` / `Gemma2ForCausalLM` names, `config.json` (the
base's own when the base is a HF folder, else written from the Tunix config), tokenizer files copied from the
base. The names and config.json come from `cotgen.models.hf` (`to_hf`, the inverse of Tunix's loader mappings;
`hf_config`). transformers, vLLM and `cotgen.models.load` read the folder.

orbax: `params/`, a StandardCheckpointer pytree in the upstream (Kaggle/GCS) layout of the family
(`transformer/layer_N/attn/q_einsum` {w}, MLP gate and up stacked as `mlp/gating_einsum`: (2, F, D) for Gemma 3,
which `tunix.models.gemma3.params.create_model_from_checkpoint` reads; (2, D, F) and `post_attention_norm` for
Gemma 2, which `tunix.models.gemma.params.load_and_format_params` + `Gemma.from_params` read), plus `config.json`
and the tokenizer beside it, and `cotgen-model.json` saying which is which. Load it with
`cotgen.models.load.load_export(folder)`, or, for a base with a Tunix preset, with the resolver's
`orbax:PRESET:FOLDER/params` spec (it finds `tokenizer.model` one level up). `save_upstream` writes just the
checkpoint (a Kaggle flax layout is that folder named after the model, e.g. `gemma2-2b-it/`, beside
`tokenizer.model`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from cotgen import __version__, runs
from cotgen.config import run_command
from cotgen.errors import CotgenError
from cotgen.io import atomic_dir, check_writable
from cotgen.models import EXPORT_MANIFEST as MANIFEST
from cotgen.models import RUN_COMMANDS
from cotgen.models.hf import hf_config, to_hf

FORMATS = ("safetensors", "orbax")
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "chat_template.jinja", "added_tokens.json")
UPSTREAM_NAMES = {"post_attn_norm": "post_attention_norm"}  # Gemma 2: Tunix module name -> upstream name


# ------------------------------------------------------------------------------------------------ mappings
def to_upstream(params: dict[str, np.ndarray], family: str = "gemma3") -> dict[str, dict[str, np.ndarray]]:
    """Tunix parameters -> the family's upstream orbax layout (Gemma 3: what `gemma3.params.
    map_from_upstream_checkpoint` reads; Gemma 2: what `gemma.params.load_and_format_params` reads)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    mlp: dict[str, dict[str, np.ndarray]] = {}
    for key, w in params.items():
        parts = key.split(".")
        if parts[0] == "embedder":
            out.setdefault("transformer/embedder", {})[parts[1]] = w
        elif parts[0] == "final_norm":
            out.setdefault("transformer/final_norm", {})[parts[1]] = w
        elif parts[0] == "layers" and parts[2] == "mlp":
            mlp.setdefault(parts[1], {})[parts[3]] = w
        elif parts[0] == "layers":
            names = [UPSTREAM_NAMES.get(n, n) if family == "gemma2" else n for n in parts[2:-1]]
            module = "/".join(["transformer", f"layer_{parts[1]}", *names])
            out.setdefault(module, {})[parts[-1]] = w
        else:
            raise CotgenError(f"cannot export parameter {key!r}: not part of a Gemma text model")
    for layer, kernels in mlp.items():
        prefix = f"transformer/layer_{layer}/mlp"
        if family == "gemma2":  # (2, D, F): the Linear kernels as they are
            out[f"{prefix}/gating_einsum"] = {"w": np.stack([kernels["gate_proj"], kernels["up_proj"]])}
        else:  # (2, F, D)
            out[f"{prefix}/gating_einsum"] = {"w": np.stack([kernels["gate_proj"].T, kernels["up_proj"].T])}
        out[f"{prefix}/linear"] = {"w": kernels["down_proj"]}
    return out


def save_upstream(params: dict[str, np.ndarray], path: Path, family: str = "gemma3") -> Path:
    """Write Tunix parameters as an orbax checkpoint folder `path` in the family's upstream (Kaggle) layout."""
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(Path(path).resolve(), to_upstream(params, family))
    checkpointer.wait_until_finished()
    checkpointer.close()
    return Path(path)


# ---------------------------------------------------------------------------------------------------- export
def locate(ckpt: Path) -> tuple[Path, int | None]:
    """A run folder (latest checkpoint) or one of its checkpoints/STEP folders (checkpoints/actor/STEP for rl)
    -> (run folder, step)."""
    ckpt = Path(ckpt)
    what = f"`cotgen {' | '.join(RUN_COMMANDS)}` output folder"
    if (ckpt / "config.toml").is_file():
        command = run_command(ckpt)
        if command not in RUN_COMMANDS:
            raise CotgenError(f"{ckpt} holds the output of `cotgen {command}`; expected a {what}")
        return ckpt, None
    if ckpt.name.isdigit():
        for run_dir in (ckpt.parent.parent, ckpt.parent.parent.parent):
            if run_command(run_dir) in RUN_COMMANDS and ckpt.is_relative_to(run_dir / "checkpoints"):
                return run_dir, int(ckpt.name)
    raise CotgenError(f"{ckpt} is neither a {what} nor one of its checkpoints/STEP folders")


def export(ckpt: Path, fmt: str, out: Path, *, dtype: str = "float32", overwrite: bool = False) -> dict:
    """Write the model of checkpoint `ckpt` to `out` in format `fmt`; return the manifest."""
    if fmt not in FORMATS:
        raise CotgenError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if dtype not in ("float32", "bfloat16"):
        raise CotgenError(f"--dtype must be float32 or bfloat16, got {dtype!r}")
    run_dir, step = locate(ckpt)
    out = Path(out)
    check_writable(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise CotgenError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    from cotgen.models.lora import merged_params

    model, loaded, cfg, step = runs.model_from_run(run_dir, step, quantize=False)
    params = merged_params(model, alpha=cfg.lora_alpha, rank=cfg.lora_rank)
    np_dtype = _np_dtype(dtype)
    params = {k: v.astype(np_dtype) for k, v in params.items()}
    eot = loaded.tokenizer.piece_to_id("<end_of_turn>")
    manifest = {"format": fmt, "cotgen_version": __version__, "base_model": cfg.model, "family": loaded.family,
                "method": cfg.method,
                "run": str(run_dir.resolve()), "step": step, "dtype": dtype,
                "lora": {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha} if cfg.lora else None}
    if out.exists():
        shutil.rmtree(out)
    with atomic_dir(out) as tmp:
        _write_config_and_tokenizer(loaded, tmp, dtype, eot)
        if fmt == "safetensors":
            from safetensors.numpy import save_file

            from cotgen.models import chat_template

            save_file(to_hf(params), str(tmp / "model.safetensors"), metadata={"format": "pt"})
            chat_template.write(tmp)  # family from config.json's model_type: `vllm serve` answers chat requests
        else:
            manifest["checkpoint"] = "params"
            save_upstream(params, tmp / "params", loaded.family)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _np_dtype(dtype: str):
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.float32


def _write_config_and_tokenizer(loaded, folder: Path, dtype: str, eot_id: int | None) -> None:
    source = loaded.source
    base = None
    if source.kind == "hf":
        base = source.path
    elif source.kind == "orbax":
        base = next(p for p in (source.path, *source.path.parents) if (p / "tokenizer.model").is_file())
    if source.kind == "hf" and (base / "config.json").is_file():
        config = json.loads((base / "config.json").read_text())
        config["torch_dtype"] = dtype
        config.pop("dtype", None)
    else:
        config = hf_config(loaded.config, dtype, eot_id, loaded.family)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if base is None:  # the tiny model: its SentencePiece model lives in cotgen's cache
        from cotgen.models import tiny

        shutil.copy(tiny.tokenizer_path(), folder / "tokenizer.model")
        return
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copy(base / name, folder / name)

