"""Load any model spec as a Tunix Gemma 2 or Gemma 3 (`flax.nnx` module) plus its tokenizer; check vocabulary.

HF folders go through Tunix's safetensors loader with a ModelConfig built from `config.json`; orbax checkpoints
through Tunix's Kaggle-layout loader with a named preset; the tiny models through Tunix's random initialiser.

Everything that differs between the families lives in one table, `TUNIX` ("gemma2" | "gemma3" -> a class of
static methods): the Tunix module and class, the config from `config.json`, presets, the safetensors and orbax
loaders, and the output head over hidden states. Gemma 2 follows Tunix's own path: `tunix.models.gemma.model.Gemma`
(`ModelConfig.gemma2_2b` ...), `params_safetensors.create_model_from_safe_tensors` for HF folders, and for the
Kaggle flax layout `params.load_and_format_params` + the linen-variable mapping `Gemma.from_params` uses (called
with cotgen's config, so tiny and HF-derived configs work too). Tunix's Gemma 2 has no `param_dtype`: its loaders
cast to the requested dtype instead.

cotgen's own outputs: `cotgen export` folders load here (`load_export`), run folders through
`cotgen.models.checkpoint` (the base model with the run's checkpoint restored and its adapters merged).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

from cotgen.errors import CotgenError
from cotgen.models import EXPORT_MANIFEST, ModelSource, families, family, resolve, source_family
from cotgen.models.tokenizer import END_OF_TURN, Tokenizer

GEMMA3_TYPES = families.FAMILIES["gemma3"].hf_model_types
GEMMA3_VOCAB = 262_144  # 1B and 270M; HF's 4B+ carry 262,208 embedding rows (the extra rows are image tokens)


@dataclasses.dataclass
class LoadedModel:
    model: Any  # tunix.models.gemma3.model.Gemma3 | tunix.models.gemma.model.Gemma
    tokenizer: Tokenizer
    config: Any  # the matching Tunix ModelConfig
    source: ModelSource
    family: str = "gemma3"  # "gemma2" | "gemma3" (cotgen.models.families)


def load(spec: str | ModelSource, *, dtype: str = "float32", mesh=None) -> LoadedModel:
    """Resolve `spec` and load it with Tunix. `dtype` is the parameter dtype ("float32" or "bfloat16")."""
    import jax.numpy as jnp

    source = resolve(spec) if isinstance(spec, str) else spec
    jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    if source.kind == "tiny":
        return _load_tiny(source, jdtype, mesh)
    if source.kind == "orbax":
        return _load_orbax(source, jdtype, mesh)
    if source.kind == "export":
        return load_export(source.path, dtype=dtype, mesh=mesh)
    if source.kind == "run":  # a train, rl or distill run folder: latest checkpoint, adapters merged
        from cotgen.models.checkpoint import load_run

        return load_run(source.path, mesh=mesh)
    return _load_hf(source, jdtype, mesh)


# ---------------------------------------------------------------------------------------------- the families
class _Family:
    """What the two families share: Tunix package `tunix.models.<package>`, its model class, presets named
    `<name>_...`, and its safetensors loader."""

    name: str
    package: str
    class_name: str

    @classmethod
    def module(cls):
        return importlib.import_module(f"tunix.models.{cls.package}.model")

    @classmethod
    def model_class(cls):
        return getattr(cls.module(), cls.class_name)

    @classmethod
    def presets(cls) -> list[str]:
        return sorted(n for n in dir(cls.module().ModelConfig) if n.startswith(f"{cls.name}_"))

    @classmethod
    def preset(cls, name: str):
        return getattr(cls.module().ModelConfig, name)()

    @classmethod
    def from_safetensors(cls, path: Path, config, mesh, dtype):
        loader = importlib.import_module(f"tunix.models.{cls.package}.params_safetensors")
        return loader.create_model_from_safe_tensors(str(path), config, mesh, dtype=dtype)


class _Gemma3(_Family):
    name, package, class_name = "gemma3", "gemma3", "Gemma3"

    @classmethod
    def config(cls, hf: dict, path: Path, dtype):
        gemma3 = cls.module()
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

    @staticmethod
    def with_dtype(config, dtype):
        return dataclasses.replace(config, param_dtype=dtype)

    @staticmethod
    def from_orbax(path: Path, config, mesh, dtype):
        from tunix.models.gemma3 import params

        return params.create_model_from_checkpoint(str(path), config, mesh, dtype=dtype)

    @staticmethod
    def head(model, hidden):
        """Logits from final hidden states (after the final norm), as the model's own forward computes them."""
        return model.embedder.decode(hidden)


class _Gemma2(_Family):
    name, package, class_name = "gemma2", "gemma", "Gemma"

    @classmethod
    def config(cls, hf: dict, path: Path, dtype):
        gemma = cls.module()
        where = f"{path}/config.json"
        layers, head_dim = hf["num_hidden_layers"], hf.get("head_dim", 256)
        expected = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]
        if hf.get("layer_types", expected) != expected:
            raise CotgenError(f"{where}: layer_types differ from Gemma 2's alternating local/global pattern")
        # Tunix's Gemma 2 scales queries by head_dim**-0.5, rotates with base 10,000 and normalises with 1e-6
        unsupported = {"query_pre_attn_scalar": (hf.get("query_pre_attn_scalar", head_dim), head_dim),
                       "rope_theta": (float(hf.get("rope_theta", 10_000.0)), 10_000.0),
                       "rms_norm_eps": (float(hf.get("rms_norm_eps", 1e-6)), 1e-6)}
        for key, (got, want) in unsupported.items():
            if got != want:
                raise CotgenError(f"{where}: {key} {got} is not supported by Tunix's Gemma 2 (it uses {want}; "
                                  "Gemma 2 2B and 9B have it)")
        return gemma.ModelConfig(
            num_layers=layers, num_embed=hf.get("vocab_size", families.FAMILIES["gemma2"].vocab),
            embed_dim=hf["hidden_size"], hidden_dim=hf["intermediate_size"], num_heads=hf["num_attention_heads"],
            head_dim=head_dim, num_kv_heads=hf["num_key_value_heads"],
            final_logit_softcap=hf.get("final_logit_softcapping"),
            attn_logits_soft_cap=hf.get("attn_logit_softcapping"),
            use_post_attn_norm=True, use_post_ffw_norm=True, sliding_window_size=hf.get("sliding_window", 4096),
            attention_types=tuple(gemma.AttentionType.LOCAL_SLIDING if t == "sliding_attention"
                                  else gemma.AttentionType.GLOBAL for t in expected),
        )

    @staticmethod
    def with_dtype(config, dtype):
        return config  # no param_dtype field: the loaders cast

    @classmethod
    def from_orbax(cls, path: Path, config, mesh, dtype):
        import jax
        import jax.numpy as jnp
        from flax import nnx
        from tunix.models.gemma import params

        gemma = cls.module()
        variables = jax.tree.map(lambda x: jnp.asarray(x, dtype), params.load_and_format_params(str(path)))
        model = gemma.module_from_linen_variables(
            lambda: gemma.Gemma(config, rngs=nnx.Rngs(params=0)), variables["transformer"],
            map_key_fn=gemma._map_linen_var_names, assign_val_fn=gemma._assign_linen_params_to_nnx_state)
        if mesh is not None:
            from tunix.rl import reshard

            model = reshard.reshard_model_to_mesh(model, mesh)
        return model

    @staticmethod
    def head(model, hidden):
        import jax.numpy as jnp

        logits = model.embedder.decode(hidden)
        cap = model.final_logits_softcap
        return logits if cap is None else jnp.tanh(logits / cap) * cap


TUNIX = {"gemma2": _Gemma2, "gemma3": _Gemma3}


def tunix_family(name: str):
    """The Tunix side of family `name` (see `TUNIX`)."""
    return TUNIX[name]


def output_head(family: str):
    """`head(model, hidden) -> logits` of family `family`: the output projection (and Gemma 2's final logit
    soft-capping) applied to final hidden states, e.g. those `output_hidden_states=True` sows."""
    return TUNIX[family].head


def tunix_config(hf: dict, path: Path, dtype):
    """Tunix ModelConfig for a HF Gemma 2 or Gemma 3 `config.json` (text part); clear errors for other families."""
    fam = families.from_model_type(hf.get("model_type"), f"{path}/config.json")
    return TUNIX[fam.name].config(hf, Path(path), dtype)


def check_vocabulary(tokenizer: Tokenizer, num_embed: int, where: str, family: str = "gemma3") -> None:
    """The tokenizer must fit the embedding and agree with the family's special ids (pad/eos/bos 0/1/2; with a
    full-size embedding, `<end_of_turn>` 107 for Gemma 2 and 106 for Gemma 3)."""
    fam = families.FAMILIES[family]
    if tokenizer.vocab_size > num_embed:
        raise CotgenError(f"{where}: tokenizer has {tokenizer.vocab_size} tokens but the model embeds only "
                          f"{num_embed}: they do not belong together")
    specials = (tokenizer.pad_id(), tokenizer.eos_id(), tokenizer.bos_id())
    if specials != (0, 1, 2):
        raise CotgenError(f"{where}: tokenizer's pad/eos/bos ids are {specials}, {fam.title} uses (0, 1, 2)")
    eot = tokenizer.piece_to_id(END_OF_TURN)
    if num_embed >= fam.vocab and eot != fam.end_of_turn:
        other = [f.title for f in families.FAMILIES.values() if f.end_of_turn == eot]
        hint = f"; {other[0]}'s tokenizer has that" if other else ""
        raise CotgenError(f"{where}: tokenizer is not {fam.title}'s (<end_of_turn> is id {eot}, not "
                          f"{fam.end_of_turn}{hint})")


# ---------------------------------------------------------------------------------------------------- loaders
def _load_hf(source: ModelSource, dtype, mesh) -> LoadedModel:
    path = source.path
    hf = json.loads((path / "config.json").read_text())
    fam = families.from_model_type(hf.get("model_type"), f"{path}/config.json")
    config = TUNIX[fam.name].config(hf, path, dtype)
    tokenizer = _tokenizer(path, path, fam)
    check_vocabulary(tokenizer, config.num_embed, str(path), fam.name)  # cheap checks first
    if not list(path.glob("*.safetensors")):
        raise CotgenError(f"{path}: no *.safetensors weights (a Hugging Face folder needs model.safetensors or "
                          "model-0000N-of-0000M.safetensors)")
    model = TUNIX[fam.name].from_safetensors(path, config, mesh, dtype)
    return LoadedModel(model, tokenizer, config, source, fam.name)


def _tokenizer(folder: Path | None, where: Path, fam) -> Tokenizer:
    if folder is None or not ((folder / "tokenizer.model").is_file() or (folder / "tokenizer.json").is_file()):
        raise CotgenError(f"{where}: no tokenizer.model or tokenizer.json beside the weights; copy the "
                          f"{fam.title} tokenizer (e.g. Kaggle's tokenizer.model) into the folder")
    return Tokenizer.from_folder(folder)


def _load_orbax(source: ModelSource, dtype, mesh) -> LoadedModel:
    from cotgen.models import tiny

    name = source_family(source)
    fam, tunix = families.FAMILIES[name], TUNIX[name]
    folder = next((p for p in (source.path, *source.path.parents) if (p / "tokenizer.model").is_file()), None)
    tokenizer = _tokenizer(folder, source.path, fam)
    if source.preset in families.TINY_PRESETS:
        config = tiny.model_config(tokenizer.vocab_size, name, dtype=dtype)
    elif source.preset in tunix.presets():
        config = tunix.with_dtype(tunix.preset(source.preset), dtype)
    else:
        known = [*TUNIX["gemma2"].presets(), *TUNIX["gemma3"].presets(), *families.TINY_PRESETS]
        raise CotgenError(f"orbax checkpoint {source.path}: {source.preset!r} is no Tunix preset (known: "
                          f"{', '.join(known)}); name the checkpoint folder after its model (e.g. gemma2-2b-it) "
                          "or use orbax:PRESET:PATH")
    _check_checkpoint_shapes(source, config)
    check_vocabulary(tokenizer, config.num_embed, str(source.path), name)
    model = tunix.from_orbax(source.path, config, mesh, dtype)
    return LoadedModel(model, tokenizer, config, source, name)


def _check_checkpoint_shapes(source: ModelSource, config) -> None:
    """The checkpoint's layer count and embedding shape must be the preset's: one line instead of a deep error."""
    import orbax.checkpoint as ocp

    try:
        meta = ocp.StandardCheckpointer().metadata(str(source.path.resolve()))
        tree = getattr(meta, "item_metadata", meta)
        tree = dict(tree.tree if hasattr(tree, "tree") else tree)
        shape = tuple(tree["transformer/embedder"]["input_embedding"].shape)
        layers = len({k.split("/")[1] for k in tree if k.startswith("transformer/layer_")})
    except Exception:  # an unexpected layout: let the loader report it
        return
    want = (config.num_layers, (config.num_embed, config.embed_dim))
    if (layers, shape) != want:
        raise CotgenError(f"orbax checkpoint {source.path}: {layers} layers and a {shape[0]}x{shape[1]} embedding, "
                          f"but preset {source.preset!r} has {want[0]} layers and {want[1][0]}x{want[1][1]}; "
                          "name the checkpoint folder after its model or use orbax:PRESET:PATH")


def _load_tiny(source: ModelSource, dtype, mesh) -> LoadedModel:
    from tunix.models import dummy_model_creator

    from cotgen.models import tiny

    name = source_family(source)
    tokenizer = Tokenizer.from_file(tiny.tokenizer_path())
    config = tiny.model_config(tokenizer.vocab_size, name, dtype=dtype)
    check_vocabulary(tokenizer, config.num_embed, source.spec, name)
    model = dummy_model_creator.create_dummy_model(TUNIX[name].model_class(), config, mesh, dtype=dtype,
                                                   random_seed=source.seed)
    return LoadedModel(model, tokenizer, config, source, name)


def load_export(folder: str | Path, *, dtype: str = "float32", mesh=None) -> LoadedModel:
    """Load a `cotgen export` folder (safetensors, or orbax in the family's upstream layout) as a LoadedModel."""
    import jax.numpy as jnp

    folder = Path(folder)
    manifest_path = folder / EXPORT_MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"format": "safetensors"}
    if manifest["format"] == "safetensors":
        return load(str(folder), dtype=dtype, mesh=mesh)
    jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    hf = json.loads((folder / "config.json").read_text())
    name = family(hf)
    config = tunix_config(hf, folder, jdtype)
    tokenizer = Tokenizer.from_folder(folder)
    check_vocabulary(tokenizer, config.num_embed, str(folder), name)
    path = (folder / manifest.get("checkpoint", "params")).resolve()
    model = tunix_family(name).from_orbax(path, config, mesh, jdtype)
    return LoadedModel(model, tokenizer, config, ModelSource(str(folder), "orbax", path), name)
