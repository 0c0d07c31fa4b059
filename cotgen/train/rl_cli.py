"""`cotgen rl` options. Imports only click and light cotgen modules; the stage loads in the command body."""

from __future__ import annotations

from pathlib import Path

import click

from cotgen.config import defaults_from, flag
from cotgen.train.rl_config import (
    ALGOS,
    KL_ESTIMATORS,
    ORDERS,
    PROMPT_STYLES,
    ROLLOUT_DTYPES,
    ROLLOUT_SEEDINGS,
    ROLLOUTS,
)


@defaults_from("cotgen.train.rl_config:RLConfig")
@click.command("rl")
@flag("--model", help="Policy: gemma-3-270m, tiny, a HF folder, a `cotgen export` folder or a `cotgen train` "
      "run folder (its latest checkpoint, LoRA merged).")
@flag("--source", help="Problems with gold answers: gsm8k, math, math500, rg:TASK or a file.")
@flag("--split")
@flag("--limit", type=int, help="First N problems of the source (the size of a generated rg: set).")
@flag("--out", type=click.Path(file_okay=False, path_type=Path),
      help="Run folder: checkpoints/, metrics.jsonl, rewards.png, run.json, config.toml.")
@flag("--algo", type=click.Choice(ALGOS), help="grpo, gspo (sequence-level ratios), drgrpo, dapo "
      "(clip-higher, no KL).")
@flag("--num-generations", "-G", type=int, help="Completions per problem (>= 2).")
@flag("--beta", type=float, help="KL weight (not with dapo).", unset="0.04")
@flag("--kl-estimator", type=click.Choice(KL_ESTIMATORS),
      help="Per-token KL: low_var_kl (k3, as in DeepSeekMath), kl (k1, Tunix's default), mse_kl.")
@flag("--epsilon", type=float, help="Clip range.")
@flag("--epsilon-high", type=float, help="Upper clip.", unset="epsilon; dapo 0.28")
@flag("--steps", type=int, help="Policy updates.")
@flag("--batch-size", type=int, help="Problems per step.")
@flag("--lora-rank", type=int, help="LoRA rank; 0 trains every weight.")
@flag("--lora-alpha", type=float, unset="2 x rank")
@flag("--lr", type=float, unset="1e-5 with LoRA, 1e-6 full")
@flag("--warmup-steps", type=int)
@flag("--max-tokens", type=int, help="Generated tokens per completion.")
@flag("--max-prompt-tokens", type=int, help="Prompts are padded to this; longer ones are dropped.",
      unset="the longest prompt, rounded up to 16 (vllm rollout) or 64")
@flag("--temperature", type=float)
@flag("--top-p", type=float)
@flag("--prompt-style", type=click.Choice(PROMPT_STYLES),
      help="chat: the student prompt in a Gemma turn; plain: the same text without the turn.",
      unset="plain for base models, chat for trained students")
@flag("--rollout", type=click.Choice(ROLLOUTS), help="vanilla: Tunix's sampler; vllm: one in-process vLLM "
      "engine, the policy's weights pushed into it after every update (CPU, GPU; TPU through tpu-inference).")
@flag("--rollout-seeding", type=click.Choice(ROLLOUT_SEEDINGS),
      help="vllm: request (each completion its own seed: the same samples on resume) or engine (faster on CPU).")
@flag("--rollout-eager/--rollout-compiled", "rollout_eager",
      help="vllm: eager (fast start-up) or torch.compile'd decoding.")
@flag("--rollout-dtype", type=click.Choice(ROLLOUT_DTYPES),
      help="vllm: the engine's dtype; actor: the actor's --dtype on CPU, bfloat16 on GPU; auto: bfloat16 where "
      "the CPU has bf16 matmuls (AVX512-BF16/AMX), else float32. The sync casts the weights to it.")
@flag("--rollout-gpu-share", type=float,
      help="vllm on GPU: vLLM's share of the device (gpu_memory_utilization); JAX gets 0.95 minus it.")
@flag("--correctness-weight", type=float)
@flag("--format-weight", type=float, help="Must stay below correctness - length.")
@flag("--length-weight", type=float, help="Over-long penalty weight.")
@flag("--work-weight", type=float,
      help="Weight of the share of right arithmetic steps in the reasoning (cotgen/verify/steps.py).")
@flag("--strict-answer/--any-answer", "strict_answer",
      help="Read the answer only from <answer>...</answer>, or with the whole extraction ladder.")
@flag("--pass-rates", type=click.Path(dir_okay=False, path_type=Path),
      help="pass_rates.parquet (problem_id, pass_rate) from `cotgen filter`: drop always- and "
      "never-solved problems.")
@flag("--pass-rate-min", type=float, help="Keep rate > this.")
@flag("--pass-rate-max", type=float, help="Keep rate < this.")
@flag("--order", type=click.Choice(ORDERS), help="shuffle, or easy_first by pass rate.")
@flag("--eval-every", type=int, help="Evaluate the held-out slice every N steps.")
@flag("--eval-size", type=int, help="Held-out problems; 0 turns evaluation off.")
@flag("--eval-split", help="Take the held-out problems from this split.", unset="held out of --split")
@flag("--save-every", type=int, help="Checkpoint every N steps (and at the end).")
@flag("--mesh", help="fsdp=F,tp=T.", unset="one device")
@flag("--seed", type=int)
@flag("--dtype", type=click.Choice(["float32", "bfloat16"]))
@flag("--resume/--no-resume", "resume", help="Continue the run in --out from its latest checkpoint.")
@flag("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
      help="TOML file of option values (flags given on the command line override it).")
@flag("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="COTGEN_DATA_DIR",
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
