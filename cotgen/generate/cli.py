"""`cotgen generate` options. Imports only click and light cotgen modules; the stage loads in the command
body."""

from __future__ import annotations

from pathlib import Path

import click

from cotgen.config import defaults_from, flag
from cotgen.engines.options import engine_options


@defaults_from("cotgen.generate.config:GenerateConfig")
@click.command("generate")
@flag("--teacher", help="Teacher model: gemma-3-270m, tiny, a HF folder, hf:ORG/NAME; the served model name "
      "for --backend openai.")
@flag("--source", help="Problems: gsm8k, math, math500, rg:TASK or a file.")
@flag("--split")
@flag("--n", type=int, help="Samples per problem.")
@flag("--temperature", type=float)
@flag("--top-p", type=float)
@flag("--max-tokens", type=int, help="Most new tokens per sample.")
@flag("--out", type=click.Path(file_okay=False, path_type=Path),
      help="Output folder; running the same command again resumes it.")
@flag("--limit", type=int, help="First N problems of the source.")
@flag("--shard", help="I/N: generate part I (0-based) of N disjoint parts of the problems.")
@flag("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
      help="TOML file of option values (flags given on the command line override it).")
@flag("--data-dir", type=click.Path(file_okay=False, path_type=Path),
      help="Folder laid out like shared/data; default $COTGEN_DATA_DIR, else the HF hub.")
@flag("--seed", type=int, help="Run seed; each sample's seed derives from it.")
@flag("--logprobs", type=int, help="Keep the top-K logprobs of every completion token.")
@flag("--prompt-style", type=click.Choice(["chat", "few_shot"]),
      unset="few_shot for base models (gemma-3-270m, tiny, folders without a chat template), else chat")
@flag("--shots", help="Exemplar set for few_shot prompts.", unset="math for math*, else gsm8k")
@flag("--shots-k", type=int, help="Exemplars per few_shot prompt.")
@flag("--seeding", type=click.Choice(["request", "engine"]),
      help="request: every sample its own seed (reproducible alone); engine: vllm/openai requests carry none "
      "and the engine's seeded generator samples the batch (faster on CPU; text depends on the batch); tunix "
      "always seeds per call.", unset="request")
@engine_options(batch_help="Problems per committed chunk.", batch_unset="64; tunix: max(1, 8 // n)")
def command(config_path, **flags) -> None:
    """Sample chain-of-thought traces from a teacher into OUT (Parquet chunks + manifest.json), resumably."""
    from cotgen.config import resolve
    from cotgen.generate.config import GenerateConfig
    from cotgen.generate.run import run

    cfg = resolve(GenerateConfig, config_path, flags)
    m = run(cfg)
    c = m["counts"]
    click.echo(f"{c['finished']}/{c['expected']} samples in {cfg.out} ({c['generated']} generated now)")
