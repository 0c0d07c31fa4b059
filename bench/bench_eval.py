"""What eval costs besides sampling, at full GSM8K test scale: scoring, metrics and --compare.

    python bench/bench_eval.py [--problems 1319] [--k 16]

Synthetic completions in the student format (a numeric answer, a quarter of them wrong, a tenth unparsed) go
through the same scoring as `cotgen eval` (the filter's extractor and verifier, the voting key), then per-problem
metrics, the summary, and a comparison of two such runs (paired bootstrap, 10,000 resamples). Prints seconds per
step; nothing here loads a model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from cotgen.engines.backend import Sample
from cotgen.eval import compare, metrics, records
from cotgen.schemas import PROBLEM_SCHEMA


def synthetic(problems: int, k: int, seed: int) -> tuple[list[Sample], list[Sample], pl.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"p{i:05d}" for i in range(problems)]
    golds = rng.integers(1, 10_000, size=problems)
    table = pl.DataFrame({"id": ids, "source": "gsm8k", "split": "test", "question": "q", "answer": golds.astype(str),
                          "solution": "", "metadata": "{}"}, schema=PROBLEM_SCHEMA)

    def completion(gold: int) -> str:
        u = rng.random()
        if u < 0.1:
            return "I am not sure, let me think about it again and again"
        answer = gold if u < 0.75 else gold + int(rng.integers(1, 50))
        return (f"<reasoning>{gold - 7} + 7 = {answer}. So the total is {answer:,}.</reasoning>\n"
                f"<answer>{answer:,}</answer>")

    def sample(pid: str, idx: int, gold: int) -> Sample:
        text = completion(gold)
        return Sample(pid, idx, text, "stop", 700, len(text) // 4, idx)

    greedy = [sample(pid, 0, g) for pid, g in zip(ids, golds)]
    sampled = [sample(pid, i, g) for pid, g in zip(ids, golds) for i in range(k)]
    return greedy, sampled, table


def timed(label: str, fn, *args, rows: int | None = None):
    start = time.perf_counter()
    out = fn(*args)
    s = time.perf_counter() - start
    rate = f"  ({rows / s:,.0f} samples/s)" if rows else ""
    print(f"{label:<44} {s:8.2f} s{rate}")
    return out


def score(greedy: list[Sample], sampled: list[Sample], table: pl.DataFrame) -> pl.DataFrame:
    return pl.concat([records.scored(greedy, "greedy", 0.0, table), records.scored(sampled, "sampled", 0.6, table)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=1319)
    ap.add_argument("--k", type=int, default=16)
    args = ap.parse_args()
    print(f"{args.problems} problems, greedy + {args.k} samples each")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (0, 1):
            greedy, sampled, table = synthetic(args.problems, args.k, seed)
            n = len(greedy) + len(sampled)
            df = timed(f"run {seed}: score (extract, verify, vote, format)", score, greedy, sampled, table, rows=n)
            per = timed(f"run {seed}: per-problem pass@k and maj@k", metrics.per_problem, df)
            summary = timed(f"run {seed}: summary", metrics.summarize, df, per)
            folder = Path(tmp) / f"run{seed}"
            folder.mkdir()
            df.write_parquet(folder / "samples.parquet")
            runs.append(folder)
            print(f"    greedy/pass@1 {summary['greedy/pass@1']:.3f}, sampled/pass@{args.k} "
                  f"{summary[f'sampled/pass@{args.k}']:.3f}, "
                  f"sampled/maj@{args.k} {summary[f'sampled/maj@{args.k}']:.3f}")
        result = timed("compare (10,000 paired bootstrap resamples)", compare.compare, *runs)
        print(f"    {len(result.rows)} metrics compared over {result.shared} problems")


if __name__ == "__main__":
    main()
