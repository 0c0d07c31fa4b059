"""`cotgen rl` options. Imports only click and light cotgen modules; the stage loads in the command body."""

from __future__ import annotations

from pathlib import Path

import click

from cotgen.train.rl_config import ALGOS, KL_ESTIMATORS, ORDERS, PROMPT_STYLES, ROLLOUTS


def _opt(*names, **kw):
    return click.option(*names, default=None, show_default=False, **kw)


@click.command("rl")
@_opt("--model", help="Policy: gemma-3-270m, tiny, a HF folder, a `cotgen export` folder or a `cotgen train` "
      "run folder (its latest checkpoint, LoRA merged).  [default: gemma-3-270m]")
@_opt("--source", help="Problems with gold answers: gsm8k, math, math500, rg:TASK or a file.  "
      "[default: gsm8k]")
@_opt("--split", help="[default: train]")
@_opt("--limit", type=int, help="First N problems of the source (the size of a generated rg: set).")
@_opt("--out", type=click.Path(file_okay=False, path_type=Path),
      help="Run folder: checkpoints/, metrics.jsonl, rewards.png, run.json, config.toml.  [default: runs/rl]")
@_opt("--algo", type=click.Choice(ALGOS), help="grpo, gspo (sequence-level ratios), drgrpo, dapo "
      "(clip-higher, no KL).  [default: grpo]")
@_opt("--num-generations", "-G", type=int, help="Completions per problem (>= 2).  [default: 4]")
@_opt("--beta", type=float, help="KL weight (not with dapo).  [default: 0.04]")
@_opt("--kl-estimator", type=click.Choice(KL_ESTIMATORS),
      help="Per-token KL: low_var_kl (k3, as in DeepSeekMath), kl (k1, Tunix's default), mse_kl.  "
      "[default: low_var_kl]")
@_opt("--epsilon", type=float, help="Clip range.  [default: 0.2]")
@_opt("--epsilon-high", type=float, help="Upper clip.  [default: epsilon; dapo 0.28]")
@_opt("--steps", type=int, help="Policy updates.  [default: 100]")
@_opt("--batch-size", type=int, help="Problems per step.  [default: 2]")
@_opt("--lora-rank", type=int, help="LoRA rank; 0 trains every weight.  [default: 16]")
@_opt("--lora-alpha", type=float, help="[default: 2 x rank]")
@_opt("--lr", type=float, help="[default: 1e-5 with LoRA, 1e-6 full]")
@_opt("--warmup-steps", type=int, help="[default: 0]")
@_opt("--max-tokens", type=int, help="Generated tokens per completion.  [default: 256]")
@_opt("--max-prompt-tokens", type=int, help="Prompt budget; longer prompts are dropped.  [default: 256]")
@_opt("--temperature", type=float, help="[default: 0.9]")
@_opt("--top-p", type=float, help="[default: 1.0]")
@_opt("--prompt-style", type=click.Choice(PROMPT_STYLES),
      help="chat: the student prompt in a Gemma turn; plain: the same text without the turn.  "
      "[default: plain for base models, chat for trained students]")
@_opt("--rollout", type=click.Choice(ROLLOUTS), help="vanilla: Tunix's sampler; vllm: TPU only.  "
      "[default: vanilla]")
@_opt("--correctness-weight", type=float, help="[default: 1.0]")
@_opt("--format-weight", type=float, help="Must stay below correctness - length.  [default: 0.2]")
@_opt("--length-weight", type=float, help="Over-long penalty weight.  [default: 0.1]")
@_opt("--strict-answer/--any-answer", "strict_answer",
      help="Read the answer only from <answer>...</answer>, or with the whole extraction ladder.  "
      "[default: strict]")
@_opt("--pass-rates", type=click.Path(dir_okay=False, path_type=Path),
      help="pass_rates.parquet (problem_id, pass_rate) from `cotgen filter`: drop always- and "
      "never-solved problems.")
@_opt("--pass-rate-min", type=float, help="Keep rate > this.  [default: 0.0]")
@_opt("--pass-rate-max", type=float, help="Keep rate < this.  [default: 1.0]")
@_opt("--order", type=click.Choice(ORDERS), help="shuffle, or easy_first by pass rate.  [default: shuffle]")
@_opt("--eval-every", type=int, help="Evaluate the held-out slice every N steps.  [default: 10]")
@_opt("--eval-size", type=int, help="Held-out problems; 0 turns evaluation off.  [default: 16]")
@_opt("--eval-split", help="Take the held-out problems from this split.  [default: held out of --split]")
@_opt("--save-every", type=int, help="Checkpoint every N steps (and at the end).  [default: 10]")
@_opt("--mesh", help="fsdp=F,tp=T.  [default: one device]")
@_opt("--seed", type=int, help="[default: 0]")
@_opt("--dtype", type=click.Choice(["float32", "bfloat16"]), help="[default: float32]")
@_opt("--resume/--no-resume", "resume", help="Continue the run in --out from its latest checkpoint.")
@_opt("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
      help="TOML file of option values (flags given on the command line override it).")
@_opt("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="COTGEN_DATA_DIR",
      help="Folder laid out like shared/data; default $COTGEN_DATA_DIR, else the HF hub.")
def command(config_path, **flags) -> None:
    """Reinforcement learning with verifiable rewards (GRPO, GSPO, Dr.GRPO, DAPO) through Tunix.

    \b
    cotgen rl --model runs/x/sft --source gsm8k --split train --out runs/x/rl --steps 200
    cotgen rl --model gemma-3-270m --source rg:basic_arithmetic --out runs/rl --steps 2 -G 2 --max-tokens 32
    """
    from cotgen.config import resolve
    from cotgen.train.rl import run
    from cotgen.train.rl_config import RLConfig

    cfg = resolve(RLConfig, config_path, flags)
    state = run(cfg)
    last, ev = state.get("last") or {}, state.get("last_eval") or {}
    click.echo(f"{state['final_step']} steps -> {cfg.out}: reward {last.get('reward', float('nan')):.3f}"
               + (f", held-out accuracy {ev['accuracy']:.3f} at step {ev['step']}" if ev else "")
               + ", step time " + ", ".join(f"{k} {v:.2f} s" for k, v in state["step_time_s"].items()))
