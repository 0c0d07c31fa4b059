"""The model a train, rl or distill run folder holds: its base model, the adapters its config asks for, and a
Tunix checkpoint restored into them.

Everything comes from the folder itself: config.toml names the command (which says where the checkpoints are,
`CHECKPOINTS`: rl's Tunix RLCluster nests the actor's under checkpoints/actor), the base model, its dtype and the
LoRA settings; no stage module is imported. `CHECKPOINTS` is the one list of the commands whose run folders hold
a model: `cotgen.models.RUN_COMMANDS` is its keys and `cotgen.runs.RUNS` has one row for each. `load_run` reads
the model's few fields from config.toml (`RunModel`), so the model loader takes run folders as model specs;
`cotgen.runs.model_from_run` passes the stage's full config instead, for export and the tests.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cotgen.config import read_toml_file, run_command
from cotgen.errors import CotgenError

# the commands whose run folders hold a model -> where under the folder their Tunix checkpoints are
CHECKPOINTS = {"train": "checkpoints", "rl": "checkpoints/actor", "distill": "checkpoints"}


@dataclasses.dataclass(frozen=True)
class RunModel:
    """The fields of a run's config.toml that rebuild its model (the stage configs all have them)."""

    model: str
    dtype: str
    lora_rank: int
    lora_modules: str
    seed: int
    lora_alpha: float | None = None  # a full-weight run's config.toml has none (None values are not written)
    qlora: bool = False  # rl runs have no QLoRA
    qlora_tile_size: int = 64

    @property
    def lora(self) -> bool:
        return self.lora_rank > 0


def run_model(run_dir: Path) -> RunModel:
    """The model part of a run folder's config.toml."""
    path = Path(run_dir) / "config.toml"
    if run_command(run_dir) not in CHECKPOINTS:
        raise CotgenError(f"{run_dir} holds no {' | '.join(CHECKPOINTS)} run")
    doc = read_toml_file(path)
    fields = dataclasses.fields(RunModel)
    missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in doc]
    if missing:
        raise CotgenError(f"{path} lacks {', '.join(missing)}: not a config.toml cotgen wrote")
    return RunModel(**{f.name: doc[f.name] for f in fields if f.name in doc})


def restore_run(run_dir: Path, cfg, step: int | None = None, *, quantize: bool | None = None, mesh=None):
    """(model, LoadedModel of the base, step) of run folder `run_dir` whose config is `cfg` (a RunModel or the
    stage's own config): the base `cfg.model` in `cfg.dtype`, its (Q)LoRA adapters, checkpoint `step` (the
    latest by default) restored. `quantize=False` rebuilds a QLoRA run over an unquantised base (the adapters are
    the same shapes), which is what merging needs."""
    from cotgen.models import lora
    from cotgen.models.load import load

    root = checkpoint_root(run_dir, CHECKPOINTS[run_command(run_dir)])
    loaded = load(cfg.model, dtype=cfg.dtype, mesh=mesh)
    model = lora.adapt(loaded.model, cfg, mesh=mesh, quantize=quantize)
    return model, loaded, restore(model, root, step, lora=cfg.lora)


def load_run(run_dir: Path, step: int | None = None, *, mesh=None):
    """A run's model (latest checkpoint by default) as a plain LoadedModel: LoRA adapters merged into the base,
    so samplers, exporters and further training see an ordinary Gemma. Loads in the run's own dtype."""
    import jax.numpy as jnp
    from flax import nnx

    from cotgen.models.lora import merged_params

    cfg = run_model(run_dir)
    model, loaded, _ = restore_run(run_dir, cfg, step, quantize=False, mesh=mesh)
    if not cfg.lora:
        return dataclasses.replace(loaded, model=model)
    params = merged_params(model, alpha=cfg.lora_alpha, rank=cfg.lora_rank)
    flat = nnx.to_flat_state(nnx.state(loaded.model, nnx.Param))
    for path, var in flat:
        var[...] = jnp.asarray(params[".".join(str(p) for p in path)], dtype=var[...].dtype)
    nnx.update(loaded.model, nnx.from_flat_state(flat))
    return loaded


def checkpoint_root(run_dir: Path, sub: str) -> Path:
    root = (Path(run_dir) / sub).resolve()
    if not root.is_dir():
        raise CotgenError(f"{run_dir} has no {sub}/ folder")
    return root


def restore(model, root: Path, step: int | None, *, lora: bool) -> int:
    """Restore Tunix checkpoint `step` (the latest when None) under `root` into `model`; the step restored."""
    from tunix.sft import checkpoint_manager

    manager = checkpoint_manager.CheckpointManager(str(root))
    try:
        steps = sorted(manager._checkpoint_manager.all_steps() or [])
        if step is not None and step not in steps:
            raise CotgenError(f"{root} has no checkpoint for step {step}; steps: {steps}")
        restored, _ = manager.maybe_restore(model, None, step, restore_only_lora_params=lora)
    finally:
        manager.close()
    if restored == 0:
        raise CotgenError(f"{root} holds no checkpoint yet")
    return restored
