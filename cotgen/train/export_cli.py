"""`cotgen export` options. Imports only click; the exporter loads in the command body."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("ckpt", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["safetensors", "orbax"]), default="safetensors",
              show_default=True, help="HF safetensors folder (transformers, vLLM) or Tunix orbax checkpoint.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
def command(ckpt: Path, fmt: str, out: Path, dtype: str, overwrite: bool) -> None:
    """Export a `cotgen train` run (its latest checkpoint) or one of its checkpoints/STEP folders, with LoRA
    adapters merged, as a model folder."""
    from cotgen.train.export import export

    manifest = export(ckpt, fmt, out, dtype=dtype, overwrite=overwrite)
    click.echo(f"{manifest['method']} model of {manifest['base_model']} (step {manifest['step']}) -> {out} "
               f"({fmt}, {dtype})")
