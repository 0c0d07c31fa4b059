"""`cotgen eval` options. Imports only click and light cotgen modules; the stage loads in the command body."""

from __future__ import annotations

from pathlib import Path

import click

from cotgen.config import defaults_from, flag
from cotgen.engines.options import engine_options
from cotgen.errors import CotgenError


@defaults_from("cotgen.eval.config:EvalConfig")
@click.command("eval")
@flag("--model", help="Model: gemma-3-270m, tiny, a HF folder, hf:ORG/NAME, orbax:PRESET:PATH; the served model "
      "name for --backend openai.")
@flag("--source", help="Problems: gsm8k, math, math500, rg:TASK or a file.")
@flag("--split")
@flag("--limit", type=int, help="First N problems of the source.")
@flag("--k", type=int, help="Samples per problem at --temperature, besides the greedy one (pass@k, maj@k); "
      "1: greedy only.")
@flag("--temperature", type=float, help="Of the k samples; the greedy pass is temperature 0.")
@flag("--top-p", type=float, help="Of the k samples.")
@flag("--max-tokens", type=int, help="Most new tokens per sample.")
@flag("--prompt-style", type=click.Choice(["chat", "few_shot"]),
      help="chat: the student prompt in a Gemma turn (trained students); few_shot: exemplars then the question "
      "(base models).", unset="few_shot for base models (gemma-3-270m, tiny, folders without a chat template), "
      "else chat")
@flag("--shots", help="Exemplar set of few_shot prompts.", unset="math for math*, else gsm8k")
@flag("--shots-k", type=int, help="Exemplars per few_shot prompt.", unset="the whole set: gsm8k 8, math 4")
@flag("--out", type=click.Path(file_okay=False, path_type=Path),
      help="Report folder (metrics.json, samples.parquet, summary.md, plots); with --compare, also write "
      "compare.md and compare.json there.")
@flag("--seed", type=int, help="Seed of the sampled pass.")
@engine_options(batch_help="Problems per backend call.", batch_unset="generate's for the backend")
@flag("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
      help="TOML file of option values (flags given on the command line override it).")
@flag("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="COTGEN_DATA_DIR",
      help="Folder laid out like shared/data; default $COTGEN_DATA_DIR, else the HF hub.")
@flag("--compare", nargs=2, type=click.Path(file_okay=False, path_type=Path), metavar="A B",
      help="Compare two eval folders instead: metrics side by side, B - A with a paired bootstrap interval "
      "and McNemar's test on greedy correctness.")
def command(config_path, compare, **flags) -> None:
    """Evaluate MODEL on a source: greedy pass@1, pass@k and maj@k, format, lengths, under a pinned protocol.

    \b
    cotgen eval --model gemma-3-270m --source gsm8k --split test --limit 200 --out runs/x/eval
    cotgen eval --compare runs/a/eval runs/b/eval
    """
    if compare:
        given = sorted(k for k, v in flags.items() if v is not None and k not in ("out", "data_dir"))
        if given or config_path:
            raise CotgenError(f"--compare takes only --out, not --{(given or ['config'])[0].replace('_', '-')}")
        from cotgen.eval import compare as cmp
        from cotgen.io import atomic_path, check_writable

        if flags["out"] is not None:
            check_writable(flags["out"])
        result = cmp.compare(*compare)
        text = cmp.render(result)
        click.echo(text, nl=False)
        if flags["out"] is not None:  # both written before either is renamed into place
            with atomic_path(flags["out"] / "compare.md") as md, atomic_path(flags["out"] / "compare.json") as js:
                md.write_text(text, encoding="utf-8")
                js.write_text(cmp.to_json(result), encoding="utf-8")
        return
    from cotgen.config import resolve
    from cotgen.eval.config import EvalConfig
    from cotgen.eval.run import run

    cfg = resolve(EvalConfig, config_path, flags)
    doc = run(cfg)
    m = doc["metrics"]
    headline = {k: v for k, v in m.items()
                if k == "greedy/pass@1" or k.startswith(("sampled/pass@", "sampled/maj@"))}
    click.echo(f"{m['problems']} problems -> {cfg.out}: "
               + ", ".join(f"{k} {'n/a' if v is None else f'{v:.4f}'}" for k, v in headline.items()))
