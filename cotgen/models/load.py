"""Load any model spec as a Tunix Gemma 3 (`flax.nnx` module) plus its tokenizer; check family and vocabulary.

HF folders go through Tunix's safetensors loader with a ModelConfig built from `config.json`; orbax checkpoints
through Tunix's Kaggle-layout loader with a named preset; the tiny model through Tunix's random initialiser.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from cotgen.errors import CotgenError
from cotgen.models import ModelSource, resolve
from cotgen.models.tokenizer import Tokenizer

GEMMA3_TYPES = ("gemma3_text", "gemma3")
GEMMA3_VOCAB = 262_144  # 1B and 270M; HF's 4B+ carry 262,208 embedding rows (the extra rows are image tokens)


@dataclasses.dataclass
class LoadedModel:
    model: Any  # tunix.models.gemma3.model.Gemma3
    tokenizer: Tokenizer
    config: Any  # tunix.models.gemma3.model.ModelConfig
    source: ModelSource


def load(spec: str | ModelSource, *, dtype: str = "float32", mesh=None) -> LoadedModel:
    """Resolve `spec` and load it with Tunix. `dtype` is the parameter dtype ("float32" or "bfloat16")."""
    import jax.numpy as jnp

    source = resolve(spec) if isinstance(spec, str) else spec
    jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    if source.kind == "tiny":
        return _load_tiny(source, jdtype, mesh)
    if source.kind == "orbax":
        return _load_orbax(source, jdtype, mesh)
    if source.kind in ("export", "run"):  # cotgen's own outputs; the exporter knows both layouts
        from cotgen.train import export

        if source.kind == "export":
            return export.load_export(source.path, dtype=dtype, mesh=mesh)
        return export.load_run(source.path, mesh=mesh)
    return _load_hf(source, jdtype, mesh)


def tunix_config(hf: dict, path: Path, dtype):
    """Tunix ModelConfig for a HF Gemma 3 `config.json` (text part); clear errors for other families."""
    from tunix.models.gemma3 import model as gemma3

    if hf.get("model_type") not in GEMMA3_TYPES:
        raise CotgenError(f"{path}/config.json: model_type {hf.get('model_type')!r} is not Gemma 3 "
                          f"(expected one of {', '.join(GEMMA3_TYPES)})")
    text = hf.get("text_config", hf)
    layers = text["num_hidden_layers"]
    expected = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)]
    if text.get("layer_types", expected) != expected:
        raise CotgenError(f"{path}/config.json: layer_types differ from Gemma 3's 5 local : 1 global pattern")
    heads, head_dim, width = text["num_attention_heads"], text.get("head_dim", 256), text["hidden_size"]
    scalar = text.get("query_pre_attn_scalar", head_dim)
    norm = gemma3.QueryPreAttentionNormalisation
    scaling = text.get("rope_scaling") or {}
    return gemma3.ModelConfig(
        num_layers=layers, num_embed=text.get("vocab_size", GEMMA3_VOCAB), embed_dim=width,
        hidden_dim=text["intermediate_size"], num_heads=heads, head_dim=head_dim,
        num_kv_heads=text["num_key_value_heads"], sliding_window_size=text.get("sliding_window"),
        local_base_frequency=int(text.get("rope_local_base_freq", 10_000)),
        global_base_frequency=int(text.get("rope_theta", 1_000_000)),
        global_scale_factor=float(scaling.get("factor", 1.0)) if scaling.get("rope_type") == "linear" else 1.0,
        query_pre_attn_norm=(norm.BY_ONE_OVER_SQRT_HEAD_DIM if scalar == head_dim
                             else norm.BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS),
        param_dtype=dtype,
    )


def check_vocabulary(tokenizer: Tokenizer, num_embed: int, where: str) -> None:
    """The tokenizer must fit the embedding and agree with Gemma's special ids."""
    if tokenizer.vocab_size > num_embed:
        raise CotgenError(f"{where}: tokenizer has {tokenizer.vocab_size} tokens but the model embeds only "
                          f"{num_embed}: they do not belong together")
    specials = (tokenizer.pad_id(), tokenizer.eos_id(), tokenizer.bos_id())
    if specials != (0, 1, 2):
        raise CotgenError(f"{where}: tokenizer's pad/eos/bos ids are {specials}, Gemma 3 uses (0, 1, 2)")
    if num_embed >= GEMMA3_VOCAB and tokenizer.piece_to_id("<end_of_turn>") != 106:
        raise CotgenError(f"{where}: tokenizer is not Gemma 3's (<end_of_turn> is not id 106)")


def _load_hf(source: ModelSource, dtype, mesh) -> LoadedModel:
    from tunix.models.gemma3 import params_safetensors

    path = source.path
    hf = json.loads((path / "config.json").read_text())
    config = tunix_config(hf, path, dtype)
    tokenizer = Tokenizer.from_folder(path)
    check_vocabulary(tokenizer, config.num_embed, str(path))
    if not list(path.glob("*.safetensors")):
        raise CotgenError(f"{path}: no *.safetensors weights")
    model = params_safetensors.create_model_from_safe_tensors(str(path), config, mesh, dtype=dtype)
    return LoadedModel(model, tokenizer, config, source)


def _load_orbax(source: ModelSource, dtype, mesh) -> LoadedModel:
    from tunix.models.gemma3 import model as gemma3
    from tunix.models.gemma3 import params

    factory = getattr(gemma3.ModelConfig, source.preset, None)
    if factory is None or source.preset.startswith("_"):
        known = [n for n in dir(gemma3.ModelConfig) if n.startswith("gemma3_")]
        raise CotgenError(f"unknown Tunix preset {source.preset!r}; known: {', '.join(known)}")
    config = dataclasses.replace(factory(), param_dtype=dtype)
    folder = next((p for p in (source.path, *source.path.parents) if (p / "tokenizer.model").is_file()), None)
    if folder is None:
        raise CotgenError(f"{source.path}: no tokenizer.model beside or above the checkpoint")
    tokenizer = Tokenizer.from_folder(folder)
    check_vocabulary(tokenizer, config.num_embed, str(source.path))
    model = params.create_model_from_checkpoint(str(source.path), config, mesh, dtype=dtype)
    return LoadedModel(model, tokenizer, config, source)


def _load_tiny(source: ModelSource, dtype, mesh) -> LoadedModel:
    from tunix.models import dummy_model_creator
    from tunix.models.gemma3 import model as gemma3

    from cotgen.models import tiny

    tokenizer = Tokenizer.from_file(tiny.tokenizer_path())
    config = dataclasses.replace(tiny.model_config(tokenizer.vocab_size), param_dtype=dtype)
    check_vocabulary(tokenizer, config.num_embed, source.spec)
    model = dummy_model_creator.create_dummy_model(gemma3.Gemma3, config, mesh, dtype=dtype,
                                                   random_seed=source.seed)
    return LoadedModel(model, tokenizer, config, source)
