"""LoRA and QLoRA through qwix, and merging adapters back into plain Gemma 3 weights.

`apply` wraps the matching projections with qwix's LoraProvider (QLoRA: the same provider with
`weight_qtype="nf4"`, so the frozen base is stored as 4-bit NormalFloat with one float scale per `tile_size`
block and the adapters stay in the parameter dtype). B starts at zero, so the wrapped model computes what the
base computes. `adapt(model, cfg)` applies what a train, distill or rl config asks for (`cotgen.models.checkpoint`
rebuilds a run's model with it).

`merged_params` returns every weight as `W + (alpha / rank) * delta(A, B)` in the base layout, keyed by
Tunix's parameter path ("layers.0.attn.q_einsum.w"). The delta is rebuilt from the einsum qwix used at
training time (`<name>_lora_einsum_str`, e.g. "BTD,Dr,rNH->BTNH" -> "Dr,rNH->NDH"); `nnx.Linear` kernels get A
@ B. A QLoRA model must be merged from an unquantised copy of its base (cotgen export does that: the adapters
are merged into the original full-precision weights, as PEFT does).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from cotgen.errors import CotgenError

log = logging.getLogger(__name__)


def apply(model, *, rank: int, alpha: float, modules: str, qlora: bool = False, tile_size: int = 64,
          seed: int = 0, mesh=None):
    """The model with LoRA adapters on every module whose path matches `modules` (a regex)."""
    import qwix
    from flax import nnx

    kwargs = dict(module_path=modules, rank=rank, alpha=alpha)
    if qlora:
        kwargs.update(weight_qtype="nf4", tile_size=qlora_tile(model.config, tile_size))
    provider = qwix.LoraProvider(**kwargs)
    lora_model = qwix.apply_lora_to_model(model, provider, rngs=nnx.Rngs(seed), **model.get_model_input())
    if not any(isinstance(v, nnx.LoRAParam) for _, v in nnx.iter_graph(lora_model)):
        raise CotgenError(f"--lora-modules {modules!r} matches no projection of the model")
    if mesh is not None:
        from tunix.rl import reshard

        lora_model = reshard.reshard_model_to_mesh(lora_model, mesh)
    return lora_model


def adapt(model, cfg, *, mesh=None, quantize: bool | None = None):
    """`model` with the (Q)LoRA adapters config `cfg` asks for (`lora`, `lora_rank`, `lora_alpha`,
    `lora_modules`, `seed`), or `model` itself for full weights. `quantize` says whether the base is stored as
    nf4 (then in blocks of `cfg.qlora_tile_size`); None takes `cfg.qlora`, a field of the configs with QLoRA
    knobs (TrainConfig, DistillConfig, checkpoint.RunModel). `cotgen rl` passes False: RLConfig trains plain
    LoRA. False also rebuilds a QLoRA run over an unquantised base (the adapters are the same shapes), which is
    what merging needs."""
    if not cfg.lora:
        return model
    if quantize is None:  # every config that adapts carries `qlora` (RLConfig: a ClassVar, always False)
        quantize = cfg.qlora
    tile_size = cfg.qlora_tile_size if quantize else 64  # read only when the base is quantised
    return apply(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha, modules=cfg.lora_modules, qlora=quantize,
                 tile_size=tile_size, seed=cfg.seed, mesh=mesh)


def qlora_tile(config, tile_size: int) -> int:
    """The nf4 block size: `tile_size`, shrunk to divide every contracting width (embed, head, MLP)."""
    dims = [getattr(config, n) for n in ("embed_dim", "head_dim", "hidden_dim") if hasattr(config, n)]
    tile = math.gcd(tile_size, *dims)
    if tile != tile_size:
        log.info("QLoRA block size %d does not divide the model widths %s: using %d", tile_size, dims, tile)
    return tile


def flat_params(model) -> dict[str, np.ndarray]:
    """Every nnx.Param of `model` but the LoRA adapters, as numpy arrays keyed by dotted path."""
    from flax import nnx

    out = {}
    base = nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))
    for path, value in nnx.to_flat_state(nnx.state(model, base)):
        array = value[...] if isinstance(value, nnx.Variable) else value
        out[".".join(str(p) for p in path)] = np.asarray(array)
    return out


def lora_deltas(model, alpha: float, rank: int) -> dict[str, np.ndarray]:
    """(alpha / rank) * delta(A, B) for every adapted weight, in that weight's layout, keyed by its path."""
    from flax import nnx

    deltas = {}
    for path, module in nnx.iter_graph(model):
        if not isinstance(module, nnx.Module):
            continue
        for name in [n[:-len("_lora_a")] for n in vars(module) if n.endswith("_lora_a")]:
            a = np.asarray(getattr(module, f"{name}_lora_a")[...], dtype=np.float32)
            b = np.asarray(getattr(module, f"{name}_lora_b")[...], dtype=np.float32)
            weight = getattr(module, name)
            shape = tuple(weight[...].shape) if isinstance(weight, nnx.Variable) else None
            lora_str = getattr(module, f"{name}_lora_einsum_str", None)
            if lora_str is not None:  # Einsum: "lhs,A,B->out"; the weight's own einsum gives its layout
                _, a_str, b_str = lora_str.split("->")[0].split(",")
                w_str = module.einsum_str.split("->")[0].split(",")[1]
                delta = np.einsum(f"{a_str},{b_str}->{w_str}", a, b)
            else:  # dot_general (nnx.Linear): A (in, r), B (r, out)
                delta = a.reshape(-1, a.shape[-1]) @ b.reshape(b.shape[0], -1)
                if shape is not None:
                    delta = delta.reshape(shape)
            key = ".".join(str(p) for p in (*path, name))
            deltas[key] = (alpha / rank) * delta
    return deltas


def merged_params(model, *, alpha: float | None = None, rank: int | None = None) -> dict[str, np.ndarray]:
    """Plain Gemma 3 weights of `model` (adapters merged when it has any), keyed by Tunix parameter path."""
    params = flat_params(model)
    if rank:
        for key, delta in lora_deltas(model, alpha, rank).items():
            if key not in params:
                raise CotgenError(f"cannot merge LoRA into {key}: the base weight is quantised or missing "
                                  "(merge QLoRA adapters into an unquantised copy of the base)")
            params[key] = (params[key].astype(np.float32) + delta).astype(params[key].dtype)
    return params
