"""Benchmark `cotgen rl`: a few GRPO steps of a model with each rollout engine, and where each step's time goes.

Each engine of `--rollouts` (default: vanilla, Tunix's sampler; vllm, cotgen's in-process vLLM engine with a
weight sync after every update) runs the same configuration (model, problems, seed, batch, G, lengths, LoRA,
dtype) in its own fresh process, one after the other; the summary prints each phase's median per engine and
the vanilla / vllm ratios (> 1: vLLM is faster), plus the held-out accuracy at the start and the end. An arm
ending in `/full` (e.g. `vllm:engine/full`) decodes the logits of every position in the reference pass and
the update, as before `cotgen.train.rl.decode_tail_only` (which vLLM rollouts turn on): its ratio to the same
arm without `/full` is what decoding the completion alone saves. An arm ending in `/thp` runs with glibc's malloc
on transparent huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, read at process start), an arm ending in
`/4k` without (the default); the ratio of the two is what huge pages change. `/bf16`: the vLLM engine samples
in bfloat16 (`--rollout-dtype bfloat16`; the actor stays in its dtype). Variants combine with `+`
(`vllm:engine/thp+bf16`).

Runs `cotgen.train.rl.run` (the same code as the CLI) and reads its metrics.jsonl: per step, wall time split
into rollout (Tunix sampler: prefill + decode of batch x G completions), reference log-probs (a forward pass
of the reference model over prompt + completion), rewards (extraction + verification) and the policy update
(forward + backward + AdamW); the first step includes JIT compilation, so the summary takes the median of the
later ones.

    flock /tmp/cotgen-heavy.lock .venv/bin/python bench/bench_rl.py --model gemma-3-270m --steps 5 \\
        --source rg:chain_sum:min_terms=2,max_terms=3,max_digits=2 -G 4 --batch-size 2 --max-tokens 96 \\
        --out /tmp/bench_rl.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("rollout", "ref_logps", "reward", "update", "sync", "step")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--source", default="rg:basic_arithmetic")
    ap.add_argument("--algo", default="grpo")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rollouts", default="vanilla,vllm",
                    help="engines to compare, each in its own process; vllm:engine = vllm with engine seeding")
    ap.add_argument("--rollout-seeding", default="request")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one engine and write its JSON to --out
    ap.add_argument("--num-generations", "-G", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-prompt-tokens", type=int, default=None, help="default: the longest prompt rounded up to 64")
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--beta", type=float, default=None, help="KL weight (0: no reference log-probs); default 0.04")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--eval-size", type=int, default=4)
    ap.add_argument("--eval-every", type=int, default=None, help="default: only before and after")
    ap.add_argument("--any-answer", action="store_true", help="correctness from the whole extraction ladder")
    ap.add_argument("--run-dir", type=Path, default=None,
                    help="keep the run here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.arm is None:
        return compare(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("jax", "absl", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import jax

    from cotgen.train import rl as rl_module
    from cotgen.train.rl import run
    from cotgen.train.rl_config import RLConfig

    engine, _, variant = args.arm.partition("/")
    variants = set(variant.split("+")) - {""}
    if "full" in variants:
        rl_module.decode_tail_only = lambda model, tail: False

    tmp = None
    run_dir = args.run_dir
    if run_dir is None:
        tmp = tempfile.mkdtemp(prefix="bench_rl.")
        run_dir = Path(tmp) / "rl"
    elif run_dir.exists():
        shutil.rmtree(run_dir)
    cfg = RLConfig(model=args.model, source=args.source, limit=256, out=run_dir, algo=args.algo,
                   steps=args.steps, num_generations=args.num_generations, batch_size=args.batch_size,
                   max_tokens=args.max_tokens, max_prompt_tokens=args.max_prompt_tokens,
                   lora_rank=args.lora_rank, eval_size=args.eval_size,
                   eval_every=args.eval_every or args.steps, save_every=args.steps,
                   strict_answer=not args.any_answer, rollout=engine.split(":")[0],
                   rollout_seeding=engine.split(":")[1] if ":" in engine else args.rollout_seeding,
                   seed=args.seed, beta=args.beta, lr=args.lr,
                   rollout_dtype="bfloat16" if "bf16" in variants else "actor")
    started = time.perf_counter()
    state = run(cfg)
    wall = time.perf_counter() - started
    from cotgen.train.metrics import read  # one row per (mode, step): partial rows written at step end merged

    rows = read(run_dir / "metrics.jsonl")
    train = sorted((r for r in rows if r["mode"] == "train"), key=lambda r: r["step"])
    evals = sorted((r for r in rows if r["mode"] == "eval"), key=lambda r: r["step"])
    per_step = [{"step": r["step"], **{f"{p}_s": r.get(f"time/{p}_s") for p in PHASES},
                 "reward": r["reward"], "correct": r["reward/correctness"], "format": r["reward/format"],
                 "kl": r.get("actor/kl"), "tokens": r["completions/tokens_mean"]} for r in train]
    later = per_step[1:] or per_step
    median = {f"{p}_s": round(statistics.median(s[f"{p}_s"] or 0.0 for s in later), 3) for p in PHASES}
    share = {p: round(median[f"{p}_s"] / median["step_s"], 3) for p in PHASES if p != "step"}
    result = {
        "device": f"{jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})",
        "host": platform.processor() or platform.machine(),
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "run_dir")},
        "completions_per_step": args.batch_size * args.num_generations,
        "wall_s": round(wall, 1),
        "per_step": per_step,
        "median_after_first_s": median,
        "share_of_step": share,
        "eval": [{k: r[k] for k in ("step", "accuracy", "format_rate", "tokens_mean", "time/eval_s")}
                 for r in evals],
        "run": {k: state[k] for k in ("final_step", "data", "prompt_style", "rollout_engine", "wall_s")},
        "peak_rss_gib": round(peak_rss() / 2**30, 2),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


def peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def arm_environment(arm: str) -> dict[str, str]:
    """The child's environment: this one, with glibc's huge-page malloc turned on for a `/thp` arm and off
    (whatever cotgen would choose) for a `/4k` arm."""
    from cotgen.train.vllm_rollout import with_malloc_thp, without_malloc_thp

    env = dict(os.environ)
    variants = set(arm.partition("/")[2].split("+"))
    if "thp" in variants:
        env = with_malloc_thp(without_malloc_thp(env))
    elif "4k" in variants:
        env = without_malloc_thp(env)
    return env


def compare(args) -> None:
    """Run every engine of --rollouts in its own process on the same configuration; print the ratios."""
    arms = [a for a in args.rollouts.split(",") if a]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_rl.") as tmp:
        for arm in arms:
            out = Path(tmp) / f"{arm.replace(':', '-').replace('/', '-')}.json"
            argv = list(sys.argv[1:])
            for flag in ("--out", "--run-dir"):  # each arm writes its own JSON, in its own run folder
                while flag in argv:
                    i = argv.index(flag)
                    del argv[i:i + 2]
            run_dir = (args.run_dir if args.run_dir else Path(tmp)) / arm.replace(":", "-").replace("/", "-")
            cmd = [sys.executable, __file__, *argv, "--arm", arm, "--out", str(out), "--run-dir", str(run_dir)]
            env = arm_environment(arm)
            print(f"== {arm}: {' '.join(cmd[1:])}", flush=True)
            started = time.perf_counter()
            subprocess.run(cmd, check=True, env=env)
            results[arm] = json.loads(out.read_text())
            results[arm]["process_wall_s"] = round(time.perf_counter() - started, 1)
    summary = {"config": {k: v for k, v in vars(args).items() if k not in ("out", "run_dir", "arm")},
               "arms": results}
    vanilla = next((a for a in results if a.split("/")[0] == "vanilla"), None)
    pairs = [(vanilla, a) for a in results if a.startswith("vllm")] if vanilla else []
    pairs += [(a, a[:-len("/full")]) for a in results if a.endswith("/full") and a[:-len("/full")] in results]
    pairs += [(a, a[:-len("/4k")] + "/thp") for a in results
              if a.endswith("/4k") and a[:-len("/4k")] + "/thp" in results]
    for slow, fast in pairs:
        a, b = results[slow]["median_after_first_s"], results[fast]["median_after_first_s"]
        ratios = {p: round(a[f"{p}_s"] / b[f"{p}_s"], 2) if b[f"{p}_s"] else None
                  for p in PHASES if a[f"{p}_s"] or b[f"{p}_s"]}
        ratios["process_wall"] = round(results[slow]["process_wall_s"] / results[fast]["process_wall_s"], 2)
        summary[f"{slow}_over_{fast}"] = ratios
    lines = [f"{'phase (median s)':<18}" + "".join(f"{arm:>12}" for arm in results)]
    for p in PHASES:
        lines.append(f"{p:<18}" + "".join(f"{r['median_after_first_s'][f'{p}_s']:>12.2f}" for r in results.values()))
    lines.append(f"{'process wall':<18}" + "".join(f"{r['process_wall_s']:>12.1f}" for r in results.values()))
    lines.append(f"{'peak RSS GiB':<18}" + "".join(f"{r['peak_rss_gib']:>12.2f}" for r in results.values()))
    for arm, r in results.items():
        lines.append(f"{arm}: held-out accuracy " + ", ".join(f"{e['accuracy']:.3f}@{e['step']}" for e in r["eval"])
                     + "; reward " + ", ".join(f"{s['reward']:.3f}" for s in r["per_step"]))
    for slow, fast in pairs:
        lines.append(f"{slow} / {fast}: " + ", ".join(f"{k} {v}x" for k, v in summary[f"{slow}_over_{fast}"].items()))
    print("\n".join(lines))
    text = json.dumps(summary, indent=2)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
