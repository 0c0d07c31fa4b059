"""`cotgen generate` options. Imports only click and light cotgen modules; the stage loads in the command
body."""

from __future__ import annotations

from pathlib import Path

import click

from cotgen.config import flag
from cotgen.generate.config import APIS, BACKENDS


def engine_options(*, batch_help: str, eager_default: str):
    """The backend options of EngineConfig, shared by `cotgen generate` and `cotgen eval`."""
    options = [
        flag("--backend", type=click.Choice(BACKENDS), help="[default: vllm]"),
        flag("--batch-size", type=int, help=batch_help),
        flag("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]),
             help="[default: bfloat16 (vllm), float32 (tunix)]"),
        flag("--enforce-eager/--no-enforce-eager",
             help=f"vllm: skip graph compilation (starts faster, decodes slower).  [default: {eager_default}]"),
        flag("--max-model-len", type=int, help="vllm: context length of the engine.  [default: 4096]"),
        flag("--tensor-parallel-size", type=int, help="vllm.  [default: 1]"),
        flag("--data-parallel-size", type=int, help="vllm.  [default: 1]"),
        flag("--base-url", help="openai: server URL.  [default: http://127.0.0.1:8000/v1]"),
        flag("--api-key-env", help="openai: variable holding the API key.  [default: OPENAI_API_KEY]"),
        flag("--concurrency", type=int, help="openai: requests in flight.  [default: 16]"),
        flag("--max-retries", type=int, help="openai: retries per sample on 429/5xx/timeouts.  [default: 6]"),
        flag("--request-timeout", type=float, help="openai: seconds per request.  [default: 600]"),
        flag("--api", type=click.Choice(APIS),
             help="openai: completions sends the rendered prompt to /v1/completions; chat sends its user turn "
             "as one message to /v1/chat/completions (the server applies the model's chat template; not with "
             "few_shot prompts).  [default: completions]"),
    ]

    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f

    return apply


@click.command("generate")
@flag("--teacher", help="Teacher model: gemma-3-270m, tiny, a HF folder, hf:ORG/NAME; the served model name "
      "for --backend openai.  [default: gemma-3-270m]")
@flag("--source", help="Problems: gsm8k, math, math500, rg:TASK or a file.  [default: gsm8k]")
@flag("--split", help="[default: train]")
@flag("--n", type=int, help="Samples per problem.  [default: 8]")
@flag("--temperature", type=float, help="[default: 0.8]")
@flag("--top-p", type=float, help="[default: 1.0]")
@flag("--max-tokens", type=int, help="Most new tokens per sample.  [default: 1024]")
@flag("--out", type=click.Path(file_okay=False, path_type=Path),
      help="Output folder; running the same command again resumes it.  [default: runs/traces]")
@flag("--limit", type=int, help="First N problems of the source.")
@flag("--shard", help="I/N: generate part I (0-based) of N disjoint parts of the problems.")
@flag("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
      help="TOML file of option values (flags given on the command line override it).")
@flag("--data-dir", type=click.Path(file_okay=False, path_type=Path),
      help="Folder laid out like shared/data; default $COTGEN_DATA_DIR, else the HF hub.")
@flag("--seed", type=int, help="Run seed; each sample's seed derives from it.  [default: 0]")
@flag("--logprobs", type=int, help="Keep the top-K logprobs of every completion token.  [default: 0]")
@flag("--prompt-style", type=click.Choice(["chat", "few_shot"]),
      help="[default: few_shot for base models (gemma-3-270m, tiny, folders without a chat template), "
      "else chat]")
@flag("--shots", help="Exemplar set for few_shot prompts.  [default: math for math*, else gsm8k]")
@flag("--shots-k", type=int, help="Exemplars per few_shot prompt.  [default: 8]")
@flag("--seeding", type=click.Choice(["request", "engine"]),
      help="request: every sample its own seed (reproducible alone); engine: vllm/openai requests carry none "
      "and the engine's seeded generator samples the batch (faster on CPU; text depends on the batch); tunix "
      "always seeds per call.  [default: request]")
@engine_options(batch_help="Problems per committed chunk.  [default: 64; tunix: max(1, 8 // n)]",
                eager_default="off")
def command(config_path, **flags) -> None:
    """Sample chain-of-thought traces from a teacher into OUT (Parquet chunks + manifest.json), resumably."""
    from cotgen.config import resolve
    from cotgen.generate.config import GenerateConfig
    from cotgen.generate.run import run

    cfg = resolve(GenerateConfig, config_path, flags)
    m = run(cfg)
    c = m["counts"]
    click.echo(f"{c['finished']}/{c['expected']} samples in {cfg.out} ({c['generated']} generated now)")
