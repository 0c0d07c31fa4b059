"""`cotgen run` options. Imports only click; the runner loads in the command body."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("run")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Validate the whole recipe (configs, data, prompt lengths, model "
              "shapes, mesh) and estimate each stage's time and memory, without loading weights.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder.  [default: [run] out, else runs/<recipe name>]")
@click.option("--only", "only", multiple=True, metavar="STAGE",
              help="Run only these stages (repeat or comma-separate: --only train,export); the stages they "
              "read must be done.")
@click.option("--smoke", is_flag=True, help="Run the recipe's exact stage graph with every model replaced by the "
              "tiny random model of its family, a few problems per source, a few steps, and the recipe's meshes "
              "on host CPU devices: minutes on a CPU (cotgen/recipe/smoke.py says what changes).")
def command(recipe: Path, dry_run: bool, out: Path | None, only: tuple[str, ...], smoke: bool) -> None:
    """Run a recipe: generate -> filter -> (distill) -> train -> export -> rl -> eval, then a report comparing
    the base and the trained student with a paired confidence interval.

    \b
    cotgen run recipes/cpu-demo.toml
    cotgen run recipes/gemma3-1b-tpu.toml --dry-run
    cotgen run recipes/gemma3-1b-tpu.toml --smoke
    """
    from cotgen.recipe import plan as plan_mod

    plan = plan_mod.build(recipe, out=out, smoke=smoke)
    names = [n for part in only for n in part.split(",") if n]
    if dry_run:
        from cotgen.recipe import dryrun

        ok = dryrun.run(plan)
        raise SystemExit(0 if ok else 2)
    from cotgen.recipe import runner

    runner.run(plan, only=names)
