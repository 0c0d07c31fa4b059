"""Benchmark `cotgen generate` on the embedded Gemma 3 270M: vllm backend vs a bare `vllm.LLM.generate`, and
tunix; per-request seeds (the default) vs `--seeding engine` on the same engine.

Same prompts (few-shot GSM8K train questions) and sampling parameters everywhere, measured side by side in one
process (one vLLM engine serves both the bare call and cotgen's backend, in alternating order after a
warm-up); tokens/s counts completion tokens over generation time. Start-up is timed separately. Both engines
run at the same batch and dtype: vLLM gets all `--prompts` x `--n` sequences at once, and the tunix arm
samples the same number of sequences per call (all prompts in one batch), both in `--dtype`. Mind the tunix
prefill: it holds [prompts x n, padded prompt, 262,144] float32 logits (8 x 512 is 4 GiB; the default 32
sequences need 16 GiB), so the tunix arm is skipped, with the reason in the report, where that would not fit. With
--compare-eager the script runs itself again with the other engine mode, so eager and compiled start-up and
throughput sit in one report. Run it alone on the machine (`flock /tmp/cotgen-heavy.lock ...` here):

    .venv/bin/python bench/bench_generate.py --prompts 8 --n 4 --max-tokens 64 --compare-eager \
        --out /tmp/bench_generate.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def config(args, backend: str, out: Path, eager: bool):
    from cotgen.generate.config import GenerateConfig, resolved

    return resolved(GenerateConfig(
        teacher="gemma-3-270m", backend=backend, source="gsm8k", split="train", data_dir=args.data_dir,
        limit=args.prompts, n=args.n, temperature=0.8, max_tokens=args.max_tokens, shots_k=args.shots_k,
        out=out, enforce_eager=eager, dtype=args.dtype,
        batch_size=args.prompts if backend == "tunix" else None))  # vllm: one chunk of all prompts (<= 64)


class Kept:
    """An open backend handed to `run` (which closes what it opened): stays open for the next measurement."""

    def __init__(self, backend):
        self.backend, self.name, self.startup_s = backend, backend.name, backend.startup_s

    def generate(self, requests):
        return self.backend.generate(requests)

    def plan(self, requests):
        getattr(self.backend, "plan", lambda r: None)(requests)

    def close(self):
        pass


def open_warm(cfg, width: int):
    """Open cfg's backend, time it, and warm it up on the first `width` requests (JIT compile, caches)."""
    import polars as pl

    from cotgen.engines.backend import open_backend
    from cotgen.generate.run import load_shard, pending, sampling_of

    start = time.perf_counter()
    backend = open_backend(cfg.teacher, cfg, sampling_of(cfg))
    startup = time.perf_counter() - start
    none = pl.DataFrame(schema={"problem_id": pl.String, "sample_idx": pl.Int64})
    requests = pending(cfg, load_shard(cfg), none)
    if hasattr(backend, "plan"):
        backend.plan(requests)
    start = time.perf_counter()
    backend.generate(requests[:width])
    return backend, requests, round(startup, 2), round(time.perf_counter() - start, 2)


def cotgen_run(cfg, backend) -> dict:
    """The whole stage (problems, prompts, chunks, Parquet, manifest) with an already open, warm backend."""
    from cotgen.generate import run as run_mod

    run_mod.open_backend = lambda model, cfg, sampling: Kept(backend)
    start = time.perf_counter()
    m = run_mod.run(cfg)
    wall = time.perf_counter() - start
    tokens, gen = m["tokens_this_run"]["completion"], m["timings_s"]["generation"]
    return {"completion_tokens": tokens, "generation_s": gen, "stage_s": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 2), "tokens_per_s_generation_only": round(tokens / gen, 2)}


def bench_vllm(args, eager: bool, tmp: Path) -> dict:
    cfg = config(args, "vllm", tmp / f"vllm-{eager}", eager)
    backend, requests, startup, warm = open_warm(cfg, 1)
    result = {"enforce_eager": eager, "dtype": cfg.dtype, "batch_sequences": len(requests) * cfg.n,
              "startup_s": startup, "warmup_s": warm}

    def bare() -> dict:
        params = [backend.params(cfg.n, r.seed) for r in requests]  # seed=None under --seeding engine
        t = time.perf_counter()
        outs = backend.llm.generate([r.prompt for r in requests], params, use_tqdm=False)
        dt = time.perf_counter() - t
        tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
        return {"completion_tokens": tokens, "generation_s": round(dt, 2),
                "tokens_per_s": round(tokens / dt, 2)}

    result["bare_vllm"] = bare()
    if not args.bare_only:
        result["cotgen_vllm"] = cotgen_run(cfg, backend)
        result["bare_vllm_again"] = bare()
        best_bare = max(result["bare_vllm"]["tokens_per_s"], result["bare_vllm_again"]["tokens_per_s"])
        result["cotgen_over_bare"] = round(result["cotgen_vllm"]["tokens_per_s"] / best_bare, 3)
        # --seeding engine: the same requests without per-request seeds (vLLM's CPU sampler then draws the
        # whole batch in one compiled op instead of one seeded generator per row)
        seeded = backend.sampling
        backend.sampling = dataclasses.replace(seeded, seeded=False)
        result["bare_vllm_engine_seed"] = bare()
        backend.sampling = seeded
        result["engine_seed_over_request_seeds"] = round(
            result["bare_vllm_engine_seed"]["tokens_per_s"] / best_bare, 3)
    return result


def tunix_prefill_gb(args) -> float:
    """Tunix's prefill holds [sequences, padded prompt, 262,144] float32 logits (tunix.md pitfall 13); few-shot
    prompts pad to 512 with 4 exemplars, 1,024 with more."""
    padded = 512 if args.shots_k <= 4 else 1024
    return args.prompts * args.n * padded * 262_144 * 4 / 2**30


def available_gb() -> float:
    with open("/proc/meminfo") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable")) / 2**20


def bench_tunix(args, tmp: Path) -> dict:
    cfg = config(args, "tunix", tmp / "tunix", True)
    backend, _, startup, warm = open_warm(cfg, args.prompts)
    return {"dtype": cfg.dtype, "batch_sequences": backend.width, "startup_s": startup,
            "warmup_compile_s": warm, **cotgen_run(cfg, backend)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--shots-k", type=int, default=4, help="few-shot exemplars (4: tunix pads to 512)")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                    help="of both engines (vLLM's default; JAX bfloat16 is slower than float32 on these CPUs)")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--eager", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--compare-eager", action="store_true", help="also run the other mode (subprocess)")
    ap.add_argument("--bare-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--skip-tunix", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("bench/bench_generate.json"))
    args = ap.parse_args()
    report = {"model": "gemma-3-270m", "prompts": args.prompts, "n": args.n, "max_tokens": args.max_tokens,
              "shots_k": args.shots_k, "temperature": 0.8, "dtype": args.dtype,
              "batch_sequences": args.prompts * args.n, "cpus": len(os.sched_getaffinity(0))}
    with tempfile.TemporaryDirectory() as tmp:
        report["vllm"] = bench_vllm(args, args.eager, Path(tmp))
        if args.compare_eager:
            other = Path(tmp) / "other.json"
            cmd = [sys.executable, __file__, "--prompts", str(args.prompts), "--n", str(args.n),
                   "--max-tokens", str(args.max_tokens), "--shots-k", str(args.shots_k),
                   "--data-dir", str(args.data_dir), "--dtype", args.dtype,
                   "--no-eager" if args.eager else "--eager",
                   "--bare-only", "--skip-tunix", "--out", str(other)]
            subprocess.run(cmd, check=True)
            report["vllm_other_mode"] = json.loads(other.read_text())["vllm"]
        need, have = tunix_prefill_gb(args), available_gb()
        if not args.skip_tunix and need > 0.6 * have:  # equal batch or no arm: never a smaller tunix batch
            report["tunix_skipped"] = (f"the tunix prefill needs about {need:.1f} GiB at {args.prompts * args.n} "
                                       f"sequences, {have:.1f} GiB available: run with fewer --prompts x --n "
                                       "(8 sequences: --prompts 4 --n 2)")
            print(report["tunix_skipped"], file=sys.stderr)
        elif not args.skip_tunix:
            report["tunix"] = bench_tunix(args, Path(tmp))
            assert report["tunix"]["batch_sequences"] == report["vllm"]["batch_sequences"], report
            assert report["tunix"]["dtype"] == report["vllm"]["dtype"], report
            bare = report["vllm"]["bare_vllm"]["tokens_per_s"]
            report["tunix_over_bare_vllm"] = round(report["tunix"]["tokens_per_s"] / bare, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
