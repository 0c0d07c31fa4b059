"""`cotgen export`: a training checkpoint -> a Hugging Face safetensors folder or a Tunix-loadable orbax
checkpoint.

Both start from the same plain weights: the run's base model with its checkpoint restored and LoRA adapters
merged (`cotgen.train.lora.merged_params`; QLoRA adapters are merged into the unquantised base).

Both families, Gemma 3 and Gemma 2 (`LoadedModel.family`):

safetensors: `model.safetensors` under HF `Gemma3ForCausalLM` / `Gemma2ForCausalLM` names, `config.json` (the
base's own when the base is a HF folder, else written from the Tunix config), tokenizer files copied from the
base. `to_hf` is the inverse of Tunix's loader mappings (tunix/models/gemma3/params_safetensors.py,
tunix/models/gemma/params_safetensors.py; the two name their parameters alike but for Gemma 2's
`post_attn_norm`): q/k/v/o einsum weights are reshaped back to (out, in) matrices, the MLP kernels transposed,
norm scales renamed (all store w of `x * (1 + w)`); tied embeddings, so no `lm_head`. transformers, vLLM and
`cotgen.models.load` read the folder.

orbax: `params/`, a StandardCheckpointer pytree in the upstream (Kaggle/GCS) layout of the family
(`transformer/layer_N/attn/q_einsum` {w}, MLP gate and up stacked as `mlp/gating_einsum`: (2, F, D) for Gemma 3,
which `tunix.models.gemma3.params.create_model_from_checkpoint` reads; (2, D, F) and `post_attention_norm` for
Gemma 2, which `tunix.models.gemma.params.load_and_format_params` + `Gemma.from_params` read), plus `config.json`
and the tokenizer beside it, and `cotgen-model.json` saying which is which. Load it with `load_export(folder)`,
or, for a base with a Tunix preset, with the resolver's `orbax:PRESET:FOLDER/params` spec (it finds
`tokenizer.model` one level up). `save_upstream` writes just the checkpoint (a Kaggle flax layout is that folder
named after the model, e.g. `gemma2-2b-it/`, beside `tokenizer.model`).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
from pathlib import Path

import numpy as np

from cotgen import __version__
from cotgen.config import run_command
from cotgen.errors import CotgenError
from cotgen.io import atomic_dir
from cotgen.models import EXPORT_MANIFEST as MANIFEST
from cotgen.models import RUN_COMMANDS

FORMATS = ("safetensors", "orbax")
# run folder command -> the module whose `model_from_run(run_dir, step, *, quantize, mesh)` restores its model
RUN_MODULES = {"train": "cotgen.train.sft", "rl": "cotgen.train.rl", "distill": "cotgen.distill.run"}
assert set(RUN_MODULES) == set(RUN_COMMANDS)
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "chat_template.jinja", "added_tokens.json")
_NORMS = {"pre_attention_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
          "post_attn_norm": "post_attention_layernorm",  # Gemma 2's name for it
          "pre_ffw_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
          "attn._query_norm": "self_attn.q_norm", "attn._key_norm": "self_attn.k_norm"}
_MLP = {"gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "down_proj": "mlp.down_proj"}
UPSTREAM_NAMES = {"post_attn_norm": "post_attention_norm"}  # Gemma 2: Tunix module name -> upstream name


# ------------------------------------------------------------------------------------------------ mappings
def to_hf(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tunix Gemma 3 or Gemma 2 parameters (dotted paths) -> HF Gemma3ForCausalLM / Gemma2ForCausalLM tensors."""

    def proj(w):  # (n, D, H) -> (n*H, D)
        n, d, h = w.shape
        return w.transpose(1, 0, 2).reshape(d, n * h).T

    out = {}
    for key, w in params.items():
        if key == "embedder.input_embedding":
            out["model.embed_tokens.weight"] = w
            continue
        if key == "final_norm.scale":
            out["model.norm.weight"] = w
            continue
        parts = key.split(".")
        if parts[0] != "layers" or len(parts) < 4:
            raise CotgenError(f"cannot export parameter {key!r}: not part of a Gemma text model")
        hf = f"model.layers.{parts[1]}."
        rest = ".".join(parts[2:])
        module, _, leaf = rest.rpartition(".")
        if rest == "attn.q_einsum.w":
            out[hf + "self_attn.q_proj.weight"] = proj(w)
        elif rest == "attn.kv_einsum.w":  # (2, K, D, H)
            out[hf + "self_attn.k_proj.weight"], out[hf + "self_attn.v_proj.weight"] = proj(w[0]), proj(w[1])
        elif rest == "attn.qkv_einsum.w":  # (3, N, D, H), Tunix's layout when num_heads == num_kv_heads
            for name, part in zip("qkv", w):
                out[hf + f"self_attn.{name}_proj.weight"] = proj(part)
        elif rest == "attn.attn_vec_einsum.w":  # (N, H, D) -> (D, N*H)
            out[hf + "self_attn.o_proj.weight"] = w.reshape(-1, w.shape[-1]).T
        elif module.startswith("mlp.") and module[4:] in _MLP and leaf == "kernel":
            out[hf + _MLP[module[4:]] + ".weight"] = w.T
        elif module in _NORMS and leaf == "scale":
            out[hf + _NORMS[module] + ".weight"] = w
        else:
            raise CotgenError(f"cannot export parameter {key!r}: no Hugging Face name for it")
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


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


def hf_config(config, dtype: str, eot_id: int | None, family: str = "gemma3", *,
              max_positions: int | None = None) -> dict:
    """A HF `config.json` for a Tunix Gemma 3 or Gemma 2 ModelConfig (used when the base has none)."""
    if family == "gemma2":
        return _hf_config_gemma2(config, dtype, eot_id, max_positions or 8192)
    from tunix.models.gemma3 import model as gemma3

    scalar = (config.head_dim if config.query_pre_attn_norm
              == gemma3.QueryPreAttentionNormalisation.BY_ONE_OVER_SQRT_HEAD_DIM
              else config.embed_dim // config.num_heads)
    layers = config.num_layers
    return {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "vocab_size": config.num_embed, "hidden_size": config.embed_dim,
        "intermediate_size": config.hidden_dim,
        "num_hidden_layers": layers, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads, "head_dim": config.head_dim,
        "query_pre_attn_scalar": scalar,
        "max_position_embeddings": max_positions or 32768, "rms_norm_eps": 1e-6,
        "rope_theta": float(config.global_base_frequency),
        "rope_local_base_freq": float(config.local_base_frequency),
        "rope_scaling": (None if config.global_scale_factor == 1.0
                         else {"rope_type": "linear", "factor": float(config.global_scale_factor)}),
        "sliding_window": config.sliding_window_size,
        "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
        "hidden_activation": "gelu_pytorch_tanh", "attention_bias": False, "attention_dropout": 0.0,
        "attn_logit_softcapping": None, "final_logit_softcapping": None, "tie_word_embeddings": True,
        "bos_token_id": 2, "eos_token_id": [1] if eot_id is None else [1, eot_id], "pad_token_id": 0,
        "torch_dtype": dtype,
    }


def _hf_config_gemma2(config, dtype: str, eot_id: int | None, max_positions: int) -> dict:
    from tunix.models.gemma import model as gemma

    return {
        "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
        "vocab_size": config.num_embed, "hidden_size": config.embed_dim, "intermediate_size": config.hidden_dim,
        "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads, "head_dim": config.head_dim,
        "query_pre_attn_scalar": config.head_dim,  # Tunix's Gemma 2 scales queries by head_dim ** -0.5
        "max_position_embeddings": max_positions, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "sliding_window": config.sliding_window_size,
        "layer_types": ["sliding_attention" if t == gemma.AttentionType.LOCAL_SLIDING else "full_attention"
                        for t in config.attention_types][:config.num_layers],
        "final_logit_softcapping": config.final_logit_softcap,
        "attn_logit_softcapping": config.attn_logits_soft_cap,
        "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh", "attention_bias": False,
        "attention_dropout": 0.0, "cache_implementation": "hybrid", "tie_word_embeddings": True,
        "bos_token_id": 2, "eos_token_id": [1] if eot_id is None else [1, eot_id], "pad_token_id": 0,
        "torch_dtype": dtype,
    }


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


def run_model(run_dir: Path, step: int | None = None, *, quantize: bool | None = None, mesh=None):
    """(model, LoadedModel of the base, run config, step) for any run folder: train, rl or distill."""
    command = run_command(run_dir)
    if command not in RUN_MODULES:
        raise CotgenError(f"{run_dir} holds no `cotgen {' | '.join(RUN_COMMANDS)}` run")
    module = importlib.import_module(RUN_MODULES[command])
    return module.model_from_run(Path(run_dir), step, quantize=quantize, mesh=mesh)


def load_run(run_dir: Path, step: int | None = None, *, mesh=None):
    """A run's model (latest checkpoint by default) as a plain LoadedModel: LoRA adapters merged into the base,
    so samplers, exporters and further training see an ordinary Gemma 3. Loads in the run's own dtype."""
    import jax.numpy as jnp
    from flax import nnx

    from cotgen.train.lora import merged_params

    model, loaded, cfg, _ = run_model(run_dir, step, quantize=False, mesh=mesh)
    if not cfg.lora:
        return dataclasses.replace(loaded, model=model)
    params = merged_params(model, alpha=cfg.lora_alpha, rank=cfg.lora_rank)
    flat = nnx.to_flat_state(nnx.state(loaded.model, nnx.Param))
    for path, var in flat:
        var[...] = jnp.asarray(params[".".join(str(p) for p in path)], dtype=var[...].dtype)
    nnx.update(loaded.model, nnx.from_flat_state(flat))
    return loaded


def export(ckpt: Path, fmt: str, out: Path, *, dtype: str = "float32", overwrite: bool = False) -> dict:
    """Write the model of checkpoint `ckpt` to `out` in format `fmt`; return the manifest."""
    if fmt not in FORMATS:
        raise CotgenError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if dtype not in ("float32", "bfloat16"):
        raise CotgenError(f"--dtype must be float32 or bfloat16, got {dtype!r}")
    run_dir, step = locate(ckpt)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise CotgenError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    from cotgen.train.lora import merged_params

    model, loaded, cfg, step = run_model(run_dir, step, quantize=False)
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


# ---------------------------------------------------------------------------------------------------- loading
def load_export(folder: str | Path, *, dtype: str = "float32", mesh=None):
    """Load a `cotgen export` folder (either format) as a cotgen LoadedModel."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"format": "safetensors"}
    from cotgen.models.load import load

    if manifest["format"] == "safetensors":
        return load(str(folder), dtype=dtype, mesh=mesh)
    import jax.numpy as jnp

    from cotgen.models import ModelSource, family
    from cotgen.models.load import LoadedModel, check_vocabulary, tunix_config, tunix_family
    from cotgen.models.tokenizer import Tokenizer

    jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    hf = json.loads((folder / "config.json").read_text())
    name = family(hf)
    config = tunix_config(hf, folder, jdtype)
    tokenizer = Tokenizer.from_folder(folder)
    check_vocabulary(tokenizer, config.num_embed, str(folder), name)
    path = (folder / manifest.get("checkpoint", "params")).resolve()
    model = tunix_family(name).from_orbax(path, config, mesh, jdtype)
    return LoadedModel(model, tokenizer, config, ModelSource(str(folder), "orbax", path), name)
