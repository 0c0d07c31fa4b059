"""The `cotgen` command line: a thin Click layer.

Each command parses its options and imports its stage inside the command body, so `cotgen --help` imports
neither jax, vllm nor tunix. Errors a user can act on print as one line and exit with status 2: CotgenError,
and an OSError that names a file (a folder that cannot be made or written, ...; `-v` logs its traceback).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from cotgen import __version__
from cotgen.errors import CotgenError

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="TOML file of option values (flags given on the command line override it).",
)
data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, envvar="COTGEN_DATA_DIR",
    help="Folder laid out like shared/data (gsm8k/, math/, math500/); default $COTGEN_DATA_DIR, else the HF hub.",
)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CotgenError as err:
            _fail(str(err))
        except OSError as err:
            if err.filename is None:  # not about a path the user gave: a bug, keep the traceback
                raise
            logging.getLogger("cotgen").debug("%s", err, exc_info=True)
            other = f" -> {err.filename2}" if err.filename2 else ""
            _fail(f"{err.strerror or err}: {err.filename}{other}")


def _fail(message: str) -> None:
    """Print `error: message` as one line (a wrapped message is joined) and exit with status 2."""
    click.echo("error: " + " ".join(line.strip() for line in message.strip().splitlines()), err=True)
    sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cotgen")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """cotgen: teach small Gemma 3 models to show their work.

    generate -> filter -> (distill) -> train -> rl -> eval, each a command; `run` chains them from one recipe.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("jax", "absl", "orbax", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ---------------------------------------------------------------------------------------------------- models
@main.group()
def models() -> None:
    """Prepare, inspect and check models (the embedded Gemma 3 270M, HF folders, orbax checkpoints)."""


@models.command("prepare")
@click.argument("spec", default="gemma-3-270m")
@click.option("--force", is_flag=True, help="Convert again even if a verified folder exists.")
def models_prepare(spec: str, force: bool) -> None:
    """Convert the embedded GGUF into a cached Hugging Face folder (once) and print the folder."""
    from cotgen.models.prepare import prepare

    click.echo(prepare(spec, force=force))


@models.command("list")
def models_list() -> None:
    """Show the model specs cotgen understands."""
    from cotgen.models import __doc__ as doc

    click.echo(doc.split("Specs:", 1)[1].split("This module", 1)[0].strip("\n"))


@models.command("check")
@click.argument("spec", default="gemma-3-270m")
@click.option("--prompt", default="The capital of France is", show_default=True)
@click.option("--max-tokens", default=16, show_default=True)
def models_check(spec: str, prompt: str, max_tokens: int) -> None:
    """Load SPEC with Tunix, print its configuration and a greedy continuation of PROMPT."""
    from cotgen.models import check

    for line in check.describe(spec, prompt, max_tokens):
        click.echo(line)


# ---------------------------------------------------------------------------------------------------- problems
@main.command()
@click.argument("source")
@click.option("--split", default="train", show_default=True)
@click.option("--limit", type=int, default=None, help="First N problems.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for generated (rg:) sources.")
@click.option("--columns", default=None, help="Column mapping for files, e.g. question=problem,answer=final.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the problems to this Parquet file (and its resolved config beside it, as .toml).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@data_dir_option
def problems(source, split, limit, seed, columns, out, overwrite, data_dir) -> None:
    """Load problems from SOURCE (gsm8k, math, math500, rg:TASK, or a JSONL/Parquet file) in cotgen's schema."""
    from cotgen import sources

    if out is not None and out.suffix.lower() == ".toml":
        raise CotgenError(f"--out {out}: name a .parquet file (its config is written beside it as .toml)")
    if out is not None and out.exists() and not overwrite:
        raise CotgenError(f"--out {out} exists; pass --overwrite to replace it")
    mapping = sources.parse_columns(columns) if columns else None
    df = sources.load_problems(source, split, data_dir=data_dir, limit=limit, seed=seed, columns=mapping)
    if out is None:
        click.echo(df)
        return
    from cotgen.io import atomic_path

    text = _provenance("problems", source=source, split=split, limit=limit, seed=seed, columns=columns,
                       data_dir=data_dir)
    # both written before either is renamed into place
    with atomic_path(out) as table, atomic_path(out.with_suffix(".toml")) as config:
        df.write_parquet(table)
        config.write_text(text, encoding="utf-8")
    click.echo(f"{len(df)} problems -> {out}")


def _provenance(command: str, **values) -> str:
    import tomli_w

    return tomli_w.dumps({"cotgen": {"command": command, "version": __version__},
                          **{k: str(v) if isinstance(v, Path) else v for k, v in values.items() if v is not None}})


# ---------------------------------------------------------------------------------------------------- stages
# Each stage's command lives in `cotgen/<stage>/cli.py` as `command` (importing only click and light cotgen
# modules); a stage without one shows as not built yet.
STAGES = {"generate": ("generate", 3), "filter": ("filter", 4), "eval": ("eval", 5), "train": ("train", 6),
          "distill": ("distill", 7), "rl": ("train", 8), "export": ("train", 6), "run": ("", 9)}
MODULES = {"rl": "cotgen.train.rl_cli", "export": "cotgen.train.export_cli", "run": "cotgen.recipe.cli"}


def _not_built(name: str, issue: int) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    @config_option
    def command(config_path):
        raise CotgenError(f"`cotgen {name}` is not built yet (tracked in issue {issue})")

    command.help = f"(not built yet: issue {issue})"
    return command


def _stage_command(name: str, package: str, issue: int) -> click.Command:
    import importlib

    module = MODULES.get(name, f"cotgen.{package}.cli")
    try:
        return importlib.import_module(module).command
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        return _not_built(name, issue)


for _name, (_package, _issue) in STAGES.items():
    main.add_command(_stage_command(_name, _package, _issue), _name)


if __name__ == "__main__":
    main()
