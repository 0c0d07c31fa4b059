"""Benchmark `cotgen rl`: a few GRPO steps of a model, and where each step's time goes.

Runs `cotgen.train.rl.run` (the same code as the CLI) and reads its metrics.jsonl: per step, wall time split
into rollout (Tunix sampler: prefill + decode of batch x G completions), reference log-probs (a forward pass
of the reference model over prompt + completion), rewards (extraction + verification) and the policy update
(forward + backward + AdamW); the first step includes JIT compilation, so the summary takes the median of the
later ones.

    flock /tmp/cotgen-heavy.lock .venv/bin/python bench/bench_rl.py --model gemma-3-270m --steps 3 \\
        --source rg:basic_arithmetic --max-tokens 64 --out /tmp/bench_rl.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

PHASES = ("rollout", "ref_logps", "reward", "update", "step")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--source", default="rg:basic_arithmetic")
    ap.add_argument("--algo", default="grpo")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--num-generations", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-prompt-tokens", type=int, default=128)
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--eval-size", type=int, default=4)
    ap.add_argument("--any-answer", action="store_true", help="correctness from the whole extraction ladder")
    ap.add_argument("--run-dir", type=Path, default=None,
                    help="keep the run here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("jax", "absl", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import jax

    from cotgen.train.rl import run
    from cotgen.train.rl_config import RLConfig

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
                   eval_every=args.steps, save_every=args.steps, strict_answer=not args.any_answer)
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
    median = {f"{p}_s": round(statistics.median(s[f"{p}_s"] for s in later), 3) for p in PHASES}
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
        "run": {k: state[k] for k in ("final_step", "data", "prompt_style")},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
