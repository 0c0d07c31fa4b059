"""Is a JAX training step slower in a process that also holds an idle vLLM engine (as `cotgen rl --rollout vllm`
does on CPU), and where does the time go?

Each arm is a real `cotgen.train.sft.run` of the 270M (LoRA r16, packed GSM8K rows, batch 6 x 288: the forward,
backward and AdamW step the RL update also runs) in its own fresh process:
- `plain`: nothing else in the process;
- `import`: torch and vllm imported, cotgen's vLLM environment set, no engine;
- `idle`: a `vllm.LLM` of the same model built after JAX started (as the rollout builds it: eager, prefix cache,
  no chunked prefill, 256 MiB of KV cache), one batch sampled, then left idle during training.
An arm ending in `/thp` runs with glibc's malloc on transparent huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`,
cotgen.train.vllm_rollout.MALLOC_THP); one ending in `/4k` without. Printed per arm: the median step time after
the first two steps, and over those steps the process's user and kernel CPU seconds and minor page faults per
step (getrusage, read when each batch is built).

    flock /tmp/cotgen-heavy.lock .venv/bin/python bench/bench_update_beside_vllm.py \\
        --arms plain/4k,idle/4k,plain/thp,idle/thp --out /tmp/bench_update.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(arm: str, steps: int, work: Path) -> None:
    import jax

    jax.devices()  # JAX starts first, as in `cotgen rl`
    if arm != "plain":
        from cotgen.engines.vllm_backend import set_environment

        set_environment()
        import torch  # noqa: F401
        import vllm  # noqa: F401
    if arm == "idle":
        from vllm import LLM, SamplingParams

        from cotgen.models import resolve

        llm = LLM(model=str(resolve("gemma-3-270m").path), dtype="float32", enforce_eager=True, max_model_len=256,
                  max_num_seqs=8, enable_prefix_caching=True, kv_cache_memory_bytes=256 << 20, seed=0,
                  enable_chunked_prefill=False, max_num_batched_tokens=8192)
        llm.generate(["What is 2 + 3?"] * 8, SamplingParams(max_tokens=64, ignore_eos=True), use_tqdm=False)
    from cotgen.train import data

    marks = []
    make = data.make_batch

    def marked(*args, **kwargs):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        marks.append((time.perf_counter(), usage.ru_utime, usage.ru_stime, usage.ru_minflt))
        return make(*args, **kwargs)

    data.make_batch = marked
    sys.path.insert(0, str(HERE))
    from bench_train import DATA, gsm8k_examples

    from cotgen.train.config import TrainConfig
    from cotgen.train.metrics import read
    from cotgen.train.sft import run

    rows = gsm8k_examples(DATA / "gsm8k" / "train.jsonl", 256)
    (work / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run(TrainConfig(model="gemma-3-270m", data=str(work / "data.jsonl"), out=str(work / "run"), steps=steps,
                    batch_size=6, max_len=288, lr=1e-4, save_every=10_000, tensorboard=False, lora_rank=16,
                    packing=True))
    times = [r["step_time_s"] for r in read(work / "run" / "metrics.jsonl") if r["mode"] == "train"][2:]
    (t0, u0, s0, f0), (t1, u1, s1, f1) = marks[2], marks[-1]
    n = len(marks) - 3
    print("RESULT " + json.dumps({
        "step_s_median": round(statistics.median(times), 2), "step_s": [round(t, 2) for t in times],
        "per_step": {"wall_s": round((t1 - t0) / n, 2), "user_s": round((u1 - u0) / n, 2),
                     "kernel_s": round((s1 - s0) / n, 2), "minor_faults": int((f1 - f0) / n)},
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", default="plain/4k,idle/4k,plain/thp,idle/thp")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.steps, args.work)
    from cotgen.train.vllm_rollout import with_malloc_thp, without_malloc_thp

    results = {}
    for arm in [a for a in args.arms.split(",") if a]:
        kind, _, pages = arm.partition("/")
        env = without_malloc_thp(dict(os.environ))
        if pages == "thp":
            env = with_malloc_thp(env)
        work = Path(tempfile.mkdtemp(prefix="bench_update."))
        try:
            res = subprocess.run([sys.executable, __file__, "--child", kind, "--steps", str(args.steps), "--work",
                                  str(work)], capture_output=True, text=True, env=env)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
        if res.returncode != 0 or line is None:
            print(f"{arm}: FAILED\n{res.stderr[-2000:]}", flush=True)
            continue
        results[arm] = r = json.loads(line[len("RESULT "):])
        p = r["per_step"]
        print(f"{arm:10s} step {r['step_s_median']:6.2f} s  user {p['user_s']:5.2f} s  kernel {p['kernel_s']:5.2f} s  "
              f"faults {p['minor_faults']:>9,}  peak {r['peak_rss_gib']:.1f} GiB", flush=True)
    for pages in ("4k", "thp"):
        a, b = results.get(f"idle/{pages}"), results.get(f"plain/{pages}")
        if a and b:
            print(f"idle / plain ({pages}): step {a['step_s_median'] / b['step_s_median']:.2f}x")
    for kind in ("plain", "idle"):
        a, b = results.get(f"{kind}/4k"), results.get(f"{kind}/thp")
        if a and b:
            print(f"{kind}: 4k / thp: step {a['step_s_median'] / b['step_s_median']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
