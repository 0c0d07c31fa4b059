"""`cotgen filter`: options -> FilterConfig -> `cotgen.filter.run.run` (imported inside the command, so
`cotgen --help` loads neither polars, sympy nor math-verify)."""

from __future__ import annotations

from pathlib import Path

import click

from cotgen import MAX_WORKERS
from cotgen.config import defaults_from, flag
from cotgen.filter.config import SELECT_MODES


@defaults_from("cotgen.filter.config:FilterConfig")
@click.command("filter")
@flag(
    "--traces",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of `cotgen generate` Parquet traces.",
)
@flag(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write train/validation Parquet, stats and summary into.",
)
@flag(
    "--problems",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PROBLEM_SCHEMA Parquet (`cotgen problems SOURCE --out FILE`).",
    unset="the source named in the traces' config.toml",
)
@flag("--source", help="Problem source of the traces (overrides the traces' config.toml).")
@flag("--split", help="Split of --source.")
@flag("--max-per-problem", type=int, help="Keep at most K verified traces per problem.")
@flag(
    "--select",
    type=click.Choice(SELECT_MODES),
    help="Which K to keep: the shortest, or the most diverse (farthest-first).",
)
@flag("--min-tokens", type=int, help="Drop completions shorter than this.")
@flag("--max-tokens", type=int, help="Drop completions longer than this.")
@flag(
    "--decontaminate",
    help="Drop problems sharing a word 8-gram with these eval sets, e.g. gsm8k:test,math500.",
)
@flag("--repair-format/--strict-format",
      help="Keep traces that only lack </reasoning> (the SFT target is rebuilt).")
@flag("--require-work", is_flag=True,
      help="Keep only traces whose arithmetic checks: a right step and no wrong one (cotgen/verify/steps.py).")
@flag("--reference-fallback", is_flag=True,
      help="Problems with no kept trace train on the source's own worked solution (teacher \"reference\").")
@flag("--val-fraction", type=float, help="Share of problems in validation.")
@flag("--seed", type=int, help="Seed of the train/validation split.")
@flag("--workers", type=int, help=f"Symbolic verifier processes, at most {MAX_WORKERS}; 0: min(4, CPUs).")
@flag("--timeout-s", type=float, help="Per-item limit of a symbolic check, in seconds.")
@flag("--overwrite", is_flag=True, help="Replace an existing --out folder.")
@flag(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file of option values (flags given on the command line override it).",
)
@flag(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="COTGEN_DATA_DIR",
    help="Folder laid out like shared/data; default $COTGEN_DATA_DIR.",
)
def command(config_path, **flags) -> None:
    """Verify, filter, deduplicate and select teacher traces into SFT data (train/validation Parquet)."""
    from cotgen.config import resolve
    from cotgen.filter.config import FilterConfig

    cfg = resolve(FilterConfig, config_path, flags)
    from cotgen.filter.run import run

    stats = run(cfg)
    f = stats["funnel"]
    click.echo(" -> ".join(f"{k} {v}" for k, v in f.items()))
    click.echo(
        f"{stats['outputs']['train_rows']} train + {stats['outputs']['validation_rows']} validation "
        f"traces -> {cfg.out}"
        + (f" (incl. {stats['reference_fallback']} reference solutions)" if stats.get("reference_fallback") else "")
    )
