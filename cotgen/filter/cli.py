"""`cotgen filter`: options -> FilterConfig -> `cotgen.filter.run.run` (imported inside the command, so
`cotgen --help` loads neither polars, sympy nor math-verify)."""

from __future__ import annotations

from pathlib import Path

import click

from cotgen.filter.config import SELECT_MODES


@click.command("filter")
@click.option(
    "--traces",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of `cotgen generate` Parquet traces.  [default: runs/traces]",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write train/validation Parquet, stats and summary into.  [default: runs/data]",
)
@click.option(
    "--problems",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PROBLEM_SCHEMA Parquet (`cotgen problems SOURCE --out FILE`); default: the source named in "
    "the traces' config.toml.",
)
@click.option(
    "--source", default=None, help="Problem source of the traces (overrides the traces' config.toml)."
)
@click.option("--split", default=None, help="Split of --source.")
@click.option(
    "--max-per-problem", type=int, default=None, help="Keep at most K verified traces per problem. [4]"
)
@click.option(
    "--select",
    "select_mode",
    type=click.Choice(SELECT_MODES),
    default=None,
    help="Which K to keep: the shortest, or the most diverse (farthest-first). [shortest]",
)
@click.option("--min-tokens", type=int, default=None, help="Drop completions shorter than this. [8]")
@click.option("--max-tokens", type=int, default=None, help="Drop completions longer than this. [2048]")
@click.option(
    "--decontaminate",
    default=None,
    help="Drop problems sharing a word 8-gram with these eval sets, e.g. gsm8k:test,math500.",
)
@click.option("--repair-format/--strict-format", default=None,
              help="Keep traces that only lack </reasoning> (the SFT target is rebuilt). [strict]")
@click.option("--val-fraction", type=float, default=None, help="Share of problems in validation. [0.05]")
@click.option("--seed", type=int, default=None, help="Seed of the train/validation split. [0]")
@click.option("--workers", type=int, default=None, help="Symbolic verifier processes; 0: min(4, CPUs). [0]")
@click.option("--timeout-s", type=float, default=None, help="Per-item limit of a symbolic check. [5]")
@click.option("--overwrite", is_flag=True, default=None, help="Replace an existing --out folder.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML file of option values (flags given on the command line override it).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="COTGEN_DATA_DIR",
    help="Folder laid out like shared/data; default $COTGEN_DATA_DIR.",
)
def command(config_path, select_mode, **flags) -> None:
    """Verify, filter, deduplicate and select teacher traces into SFT data (train/validation Parquet)."""
    from cotgen.config import resolve
    from cotgen.filter.config import FilterConfig

    cfg = resolve(FilterConfig, config_path, {**flags, "select": select_mode})
    from cotgen.filter.run import run

    stats = run(cfg)
    f = stats["funnel"]
    click.echo(" -> ".join(f"{k} {v}" for k, v in f.items()))
    click.echo(
        f"{stats['outputs']['train_rows']} train + {stats['outputs']['validation_rows']} validation "
        f"traces -> {cfg.out}"
    )
