"""`cotgen train` options. Imports only click and light cotgen modules; the stage loads in the command
body."""

from __future__ import annotations

from pathlib import Path

import click

from cotgen.config import defaults_from, flag

# The options `cotgen train` and `cotgen distill train` share (DistillConfig extends TrainConfig).
TRAINING_OPTIONS = [
    flag("--lora-rank", type=int, help="Train LoRA adapters of this rank; 0: full weights."),
    flag("--lora-alpha", type=float, unset="2 x rank"),
    flag("--lora-modules", help="Regex of the module paths to adapt (the default: every attention and MLP "
         "projection)."),
    flag("--qlora", is_flag=True,
         help="LoRA over an nf4-quantised frozen base (rank 16 unless --lora-rank)."),
    flag("--steps", type=int, help="Optimizer steps (overrides --epochs)."),
    flag("--epochs", type=float, help="Passes over the data.", unset="1 (unless --steps)"),
    flag("--lr", type=float, help="Peak learning rate.", unset="2e-4 LoRA, 2e-5 full"),
    flag("--warmup-steps", type=int, unset="3% of the steps"),
    flag("--batch-size", type=int, help="Rows per step."),
    flag("--max-len", type=int, help="Tokens per row."),
    flag("--packing/--no-packing", help="Pack several examples per row."),
    flag("--dtype", type=click.Choice(["float32", "bfloat16"]), help="Parameter dtype."),
    flag("--seed", type=int, help="Data order and LoRA init."),
    flag("--save-every", type=int, help="Checkpoint every N steps (and at the end)."),
    flag("--eval-every", type=int, help="Validation loss every N steps."),
    flag("--mesh", help="Device mesh, e.g. fsdp=4,tp=2.", unset="one device"),
    flag("--distributed", is_flag=True,
         help="Call jax.distributed.initialize() first (multi-host TPU / SLURM)."),
    flag("--resume", is_flag=True,
         help="Continue the run in --out from its last checkpoint (same config and data)."),
    flag("--no-tensorboard", "tensorboard", flag_value=False, help="Skip the TensorBoard event files."),
]


def training_options(fn):
    """Apply TRAINING_OPTIONS to a click command, in list order."""
    for option in reversed(TRAINING_OPTIONS):
        fn = option(fn)
    return fn


@defaults_from("cotgen.train.config:TrainConfig")
@click.command("train")
@flag("--model", help="Base model spec: gemma-3-270m, tiny, hf:ORG/NAME, orbax:PRESET:PATH or a folder.")
@flag("--data", type=click.Path(path_type=Path),
      help="`cotgen filter` folder (train.parquet, optional validation.parquet) or one .parquet/.jsonl file "
           "with prompt and completion columns.")
@flag("--out", type=click.Path(file_okay=False, path_type=Path),
      help="Run folder: config, checkpoints, metrics, loss curve.")
@training_options
@flag("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
      help="TOML file of option values (flags given on the command line override it).")
def command(config_path, **flags) -> None:
    """Supervised fine-tuning of a Gemma 3 student on prompt/completion data (full, LoRA or QLoRA), with
    Tunix."""
    from cotgen.config import resolve
    from cotgen.train.config import TrainConfig

    cfg = resolve(TrainConfig, config_path, flags)
    from cotgen.train.sft import run

    state = run(cfg)
    val = state["last_eval_loss"]
    click.echo(f"{state['method']} SFT of {state['model']}: {state['final_step']} steps, loss "
               f"{state['first_loss']:.4f} -> {state['last_loss']:.4f}"
               + (f", validation {val:.4f}" if val is not None else "")
               + f"; checkpoint {state['checkpoint']}")
