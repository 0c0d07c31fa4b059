"""Run folders of `cotgen train`, `cotgen rl` and `cotgen distill`: the refuse/resume check, run.json, the
resolved config, and the model a run trained.

A run folder holds config.toml (every resolved value and the command that wrote it), run.json (the state and
summary), metrics.jsonl and Tunix's orbax checkpoints. What differs between the three commands is one row of
`RUNS`: the config class, its `identity` (the fields a resume must keep) and how the run is named in messages;
which commands have a row is `cotgen.models.checkpoint.CHECKPOINTS`. `model_from_run` rebuilds any run's model
from the folder alone, through `cotgen.models.checkpoint` (which knows where each command keeps its checkpoints,
and which the model loader uses for run folders given as model specs): no trainer module is imported.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from cotgen.config import config_class, describe_changes, run_command
from cotgen.config import resolve as resolve_config
from cotgen.errors import CotgenError
from cotgen.io import check_writable, read_json, write_text
from cotgen.models.checkpoint import CHECKPOINTS


@dataclasses.dataclass(frozen=True)
class Run:
    """How one command's run folder reads (module paths as "module:attribute", imported when needed)."""

    config: str  # the config class
    identity: str  # cfg -> the fields that define the run (what --resume must keep)
    noun: str  # "--out X already holds {noun}"


# one row per command whose run folder holds a model (`CHECKPOINTS`, which the model loader reads too)
RUNS = {
    "train": Run("cotgen.train.config:TrainConfig", "cotgen.train.config:identity", "a training run"),
    "rl": Run("cotgen.train.rl_config:RLConfig", "cotgen.train.rl_config:identity", "an rl run"),
    "distill": Run("cotgen.distill.config:DistillConfig", "cotgen.train.config:identity", "a distillation run"),
}
assert RUNS.keys() == CHECKPOINTS.keys()


# ---------------------------------------------------------------------------------------------------- config
def read_run_config(run_dir: Path, command: str | None = None):
    """The resolved config of a run folder (of `command`, when given), as its command's config class."""
    path = Path(run_dir) / "config.toml"
    found = run_command(run_dir)
    command = command or found
    if not path.is_file() or found != command or command not in RUNS:
        raise CotgenError(f"{run_dir} holds no cotgen {command or ' | '.join(RUNS)} run")
    return resolve_config(config_class(RUNS[command].config), path)


def check_out(cfg, fingerprint: str, command: str) -> bool:
    """Refuse an output folder holding something else; allow --resume of the same run (same config, same data
    by content fingerprint). True when the folder already holds this run."""
    out, run = cfg.out, RUNS[command]
    if not out.exists():
        check_writable(out)  # now, not after the weights have loaded
        return False
    if not out.is_dir():
        raise CotgenError(f"--out {out} is a file")
    if not (out / "config.toml").is_file():
        if any(out.iterdir()):
            raise CotgenError(f"--out {out} is not empty and holds no cotgen {command} run; "
                              "choose another folder")
        return False
    found = run_command(out)
    if found != command:
        raise CotgenError(f"--out {out} holds the output of `cotgen {found or '?'}`; choose another folder")
    if not cfg.resume:
        raise CotgenError(f"--out {out} already holds {run.noun}; pass --resume to continue it, or choose "
                          "another folder")
    identity = config_class(run.identity)
    shown = describe_changes(identity(read_run_config(out, command)), identity(cfg))
    if shown:
        raise CotgenError(f"--resume: {out} holds a run with another config ({shown}); use the same options "
                          "or another --out")
    state = read_state(out)
    if state.get("data_fingerprint") not in (None, fingerprint):
        files = f" ({state['data_files']})" if state.get("data_files") else ""  # rl's data: problems, no files
        raise CotgenError(f"--resume: the data differs from the data {out} was trained on{files}; use the same "
                          "data or another --out")
    return True


# ---------------------------------------------------------------------------------------------------- state
def read_state(out: Path) -> dict:
    """OUT/run.json ({} before the run wrote one)."""
    path = Path(out) / "run.json"
    return read_json(path) if path.is_file() else {}


def write_state(out: Path, state: dict) -> None:
    """Write OUT/run.json atomically (a reader never sees half a file)."""
    write_text(Path(out) / "run.json", json.dumps(state, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------- model
def model_from_run(run_dir: Path, step: int | None = None, *, quantize: bool | None = None, mesh=None):
    """(model, LoadedModel of the base, config, step) restored from any run's checkpoint (the latest by default):
    `cotgen.models.checkpoint.restore_run` with the run's own config.

    `quantize=False` rebuilds a QLoRA run over an unquantised base (the adapters are the same shapes), which
    is what merging needs."""
    from cotgen.models.checkpoint import restore_run

    cfg = read_run_config(run_dir)
    model, loaded, restored = restore_run(Path(run_dir), cfg, step, quantize=quantize, mesh=mesh)
    return model, loaded, cfg, restored
