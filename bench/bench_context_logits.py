"""Benchmark the cost of context distillation's teacher pass: `cotgen distill logits` over the same examples with
the teacher reading (a) the student's own prompt (plain KD), (b) each trace's 8-shot prompt recomputed for every
example, (c) the same with vLLM's prefix cache, which computes the 8 shared exemplars once. Same model, backend,
dtype, top-k and batch; each run in its own fresh process, one after the other; prints each run's compute time,
teacher tokens/s, and the (b)/(c) ratio, plus how closely (b) and (c) agree (they must store the same rows).

    flock /tmp/cotgen-heavy.lock .venv/bin/python bench/bench_context_logits.py --examples 64 --out /tmp/ctx.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = (("student prompt", "student", False), ("8-shot, no cache", "trace", False),
        ("8-shot, prefix cache", "trace", True))


def dataset(folder: Path, n: int, seed: int) -> Path:
    """n one-digit sums (the demo's task) as SFT rows with a right worked answer and the 8-shot teacher prompt."""
    import polars as pl

    from cotgen import prompts
    from cotgen.sources import rg_problems

    config = dict(min_terms=2, max_terms=3, min_digits=1, max_digits=1, operators=["+"], allow_parentheses=False,
                  allow_negation=False)
    rows = []
    for item in rg_problems("basic_arithmetic", n, seed, config):
        q, a = item["question"], item["answer"]
        expr = q.removeprefix("Calculate ").rstrip(".").strip()
        rows.append({"prompt": prompts.student_prompt(q),
                     "completion": prompts.student_target(f"{expr} = {a}.", a),
                     "teacher_prompt": prompts.teacher_prompt(q, style="few_shot")})
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(folder / "train.parquet")
    return folder


def child(args) -> None:
    from cotgen.distill.config import LogitsConfig
    from cotgen.distill.logits import run

    m = run(LogitsConfig(teacher=args.model, data=Path(args.data), out=Path(args.out), backend="vllm", top_k=64,
                         max_len=288, dtype=args.dtype, teacher_prompt=args.mode, prefix_cache=args.cache))
    print("RESULT " + json.dumps({k: m[k] for k in ("compute_s", "wall_s", "teacher_tokens", "tokens",
                                                     "prefix_cached_tokens", "recomputed_without_cache")}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--cache", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    from cotgen.distill import store

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-ctx-") as tmp:
        data = dataset(Path(tmp) / "data", args.examples, args.seed)
        for label, mode, cache in RUNS:
            out = Path(tmp) / label.replace(" ", "_").replace(",", "")
            cmd = [sys.executable, __file__, "--child", "--model", args.model, "--dtype", args.dtype,
                   "--data", str(data), "--out", str(out), "--mode", mode] + (["--cache"] if cache else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{label} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(line[7:])
            r["teacher_tokens_per_s"] = round(r["teacher_tokens"] / r["compute_s"], 1)
            results[label] = r | {"folder": out}
            print(f"{label:<22} compute {r['compute_s']:7.1f} s  wall {r['wall_s']:7.1f} s  "
                  f"{r['teacher_tokens']:7d} teacher tokens ({r['teacher_tokens_per_s']:.0f}/s)  "
                  f"cached {r['prefix_cached_tokens']}  recomputed {r['recomputed_without_cache']}", flush=True)
        a, b = results["8-shot, no cache"], results["8-shot, prefix cache"]
        agree = store.compare(a["folder"], b["folder"])
        summary = {"examples": args.examples, "model": args.model, "dtype": args.dtype,
                   "runs": {k: {x: y for x, y in v.items() if x != "folder"} for k, v in results.items()},
                   "no_cache_over_cache_compute": round(a["compute_s"] / b["compute_s"], 2),
                   "cache_over_student_compute": round(b["compute_s"] / results["student prompt"]["compute_s"], 2),
                   "cache_vs_no_cache": agree}
    print(f"8-shot compute, no cache / prefix cache: {summary['no_cache_over_cache_compute']:.2f}x; "
          f"prefix cache / student prompt: {summary['cache_over_student_compute']:.2f}x")
    print(f"cache vs no cache: top-1 agreement {agree['top1_agreement']:.4f}, top-k overlap "
          f"{agree['topk_overlap_mean']:.4f}, max rel diff {agree['max_rel_diff']:.2e}")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
