"""Benchmark and real run of `cotgen distill`: top-k storage and producers, then SFT vs online KD vs offline KD.

Stages (each a real `cotgen` command in a subprocess, timed; `--stages` picks some, `--work` keeps the folders
so stages can run one at a time):
- `data`: GSM8K train problems in the student format (reference solutions, <<calculator>> notes removed),
  or with `--teacher-traces N` the teacher's own samples on N GSM8K questions (`cotgen generate`, chat prompt);
  the ones whose whole example fits `--max-len`; `--train` of them as train.parquet and `--val` more as
  validation.parquet (`cotgen filter`'s layout).
- `student`: `cotgen distill student TEACHER --layers N`: the teacher's first N layers.
- `logits`: `cotgen distill logits` with vllm (k = `--top-k`) over the train set; then, over the first
  `--compare` examples, vllm and tunix at k and tunix at `--top-k-large`: storage per token, time, and the
  agreement of the two producers (top-1, top-k sets, |difference| of shared log-probabilities).
- `sft`, `online`, `offline`: `cotgen train` / `cotgen distill train --teacher` / `--logits` on the student
  with the same steps, batch, learning rate and seed; held-out NLL = validation loss (completion tokens).
- `report`: everything side by side, ratios, loss curves in one PNG, JSON.

    flock /tmp/cotgen-heavy.lock .venv/bin/python bench/bench_distill.py --work /tmp/kd/bench \
        --stages data,student,logits
    flock /tmp/cotgen-heavy.lock .venv/bin/python bench/bench_distill.py --work /tmp/kd/bench --stages sft
    ... online, offline, then --stages report --out bench_distill.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
STAGES = ("data", "student", "logits", "sft", "online", "offline", "report")


def cotgen(*args: str, log: Path) -> float:
    """Run `cotgen ARGS`, its output to `log`; return the wall time."""
    start = time.perf_counter()
    with open(log, "w") as f:
        res = subprocess.run([sys.executable, "-m", "cotgen.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                             env={**os.environ, "COTGEN_DATA_DIR": str(DATA)})
    if res.returncode:
        sys.exit(f"cotgen {' '.join(args)} failed; see {log}:\n" + log.read_text()[-3000:])
    return time.perf_counter() - start


def teacher_examples(args, work: Path) -> list[dict]:
    """`cotgen generate` with the teacher itself on GSM8K train questions (one sample each, its chat prompt,
    temperature `--teacher-temperature`): rows of (the exact prompt it saw, what it wrote). Held-out NLL on such
    rows is what distillation minimises: the student's cross entropy against the teacher's own distribution."""
    import polars as pl

    out = work / "traces"
    cotgen("generate", "--teacher", args.teacher, "--source", "gsm8k", "--split", "train", "--limit",
           str(args.teacher_traces), "--n", "1", "--temperature", str(args.teacher_temperature),
           "--prompt-style", "chat", "--max-tokens", str(args.teacher_max_tokens), "--max-model-len", "1024",
           "--out", str(out), log=work / "generate.log")
    df = pl.read_parquet(out / "traces-*.parquet").filter(pl.col("error").is_null()).sort("problem_id")
    return [{"prompt": r["prompt"], "completion": r["completion"].strip()}
            for r in df.iter_rows(named=True) if r["completion"].strip()]


def stage_data(args, work: Path) -> dict:
    import polars as pl

    sys.path.insert(0, str(REPO / "bench"))
    from bench_train import gsm8k_examples

    from cotgen.models import resolve
    from cotgen.models.tokenizer import Tokenizer

    tk = Tokenizer.from_folder(resolve(args.teacher).path)
    if args.teacher_traces:
        rows = teacher_examples(args, work)
    else:
        rows = gsm8k_examples(args.data_dir / "gsm8k" / "train.jsonl", 3000)
    fits = [r for r in rows
            if len(tk.encode(r["prompt"], add_bos=True)) + len(tk.encode(r["completion"])) + 1 <= args.max_len]
    out = work / "data"
    out.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(fits[:args.train]).write_parquet(out / "train.parquet")
    pl.DataFrame(fits[args.train:args.train + args.val]).write_parquet(out / "validation.parquet")
    return {"text": "teacher samples" if args.teacher_traces else "GSM8K reference solutions",
            "train": min(args.train, len(fits)), "validation": len(fits[args.train:args.train + args.val])}


def stage_student(args, work: Path) -> dict:
    wall = cotgen("distill", "student", args.teacher, "--layers", str(args.layers), "--out",
                  str(work / "student"), log=work / "student.log")
    return {"layers": args.layers, "wall_s": wall}


def _manifest(folder: Path) -> dict:
    m = json.loads((folder / "manifest.json").read_text())
    return {k: m[k] for k in ("backend", "dtype", "top_k", "examples", "tokens", "bytes", "bytes_per_token",
                              "payload_bytes_per_token", "compute_s", "wall_s", "tokens_per_s")}


def stage_logits(args, work: Path) -> dict:
    from cotgen.distill import store

    common = ["--teacher", args.teacher, "--data", str(work / "data"), "--max-len", str(args.max_len)]
    runs = {}
    jobs = [("vllm_k%d" % args.top_k, ["--backend", "vllm", "--top-k", str(args.top_k)]),
            ("cmp_vllm_k%d" % args.top_k, ["--backend", "vllm", "--top-k", str(args.top_k),
                                          "--limit", str(args.compare)]),
            ("cmp_tunix_k%d" % args.top_k, ["--backend", "tunix", "--top-k", str(args.top_k),
                                           "--limit", str(args.compare)]),
            ("cmp_tunix_k%d" % args.top_k_large, ["--backend", "tunix", "--top-k", str(args.top_k_large),
                                                 "--limit", str(args.compare)]),
            ("cmp_vllm_bf16_k%d" % args.top_k, ["--backend", "vllm", "--top-k", str(args.top_k), "--dtype",
                                               "bfloat16", "--limit", str(args.compare)])]
    if not args.compare:  # producers' agreement measured elsewhere: only the training logits
        jobs = jobs[:1]
    for name, extra in jobs:
        out = work / "logits" / name
        if not (out / "manifest.json").is_file():
            cotgen("distill", "logits", *common, *extra, "--out", str(out), log=work / f"logits-{name}.log")
        runs[name] = _manifest(out)
        print(name, json.dumps(runs[name]), flush=True)
    k, big = args.top_k, args.top_k_large
    if not args.compare:
        return {"runs": runs}
    agreement = store.compare(work / "logits" / f"cmp_tunix_k{k}", work / "logits" / f"cmp_vllm_k{k}")
    bf16 = store.compare(work / "logits" / f"cmp_tunix_k{k}", work / "logits" / f"cmp_vllm_bf16_k{k}")
    print("agreement tunix f32 vs vllm f32:", json.dumps(agreement), flush=True)
    print("agreement tunix f32 vs vllm bf16:", json.dumps(bf16), flush=True)
    return {"runs": runs, "agreement_f32": agreement, "agreement_vllm_bf16": bf16,
            "ratios": {
                f"bytes_per_token_k{big}_vs_k{k}": runs[f"cmp_tunix_k{big}"]["bytes_per_token"]
                / runs[f"cmp_tunix_k{k}"]["bytes_per_token"],
                f"tunix_compute_k{big}_vs_k{k}": runs[f"cmp_tunix_k{big}"]["compute_s"]
                / runs[f"cmp_tunix_k{k}"]["compute_s"],
                "vllm_vs_tunix_tokens_per_s": runs[f"cmp_vllm_k{k}"]["tokens_per_s"]
                / runs[f"cmp_tunix_k{k}"]["tokens_per_s"],
                "vllm_bf16_vs_f32_tokens_per_s": runs[f"cmp_vllm_bf16_k{k}"]["tokens_per_s"]
                / runs[f"cmp_vllm_k{k}"]["tokens_per_s"],
            }}


def _train_args(args, work: Path) -> list[str]:
    return ["--data", str(work / "data"), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
            "--max-len", str(args.max_len), "--lr", str(args.lr), "--eval-every", str(args.eval_every),
            "--save-every", str(args.steps), "--seed", str(args.seed), "--no-tensorboard"]


def stage_train(args, work: Path, mode: str) -> dict:
    out = work / "runs" / f"{mode}{args.tag}"
    if not (out / "run.json").is_file() or json.loads((out / "run.json").read_text())["status"] != "done":
        student = str(work / "student")
        if mode == "sft":
            cmd = ["train", "--model", student]
        elif mode == "online":
            cmd = ["distill", "train", "--student", student, "--teacher", args.teacher,
                   "--alpha", str(args.alpha), "--temperature", str(args.temperature)]
        else:
            cmd = ["distill", "train", "--student", student, "--logits",
                   str(work / "logits" / f"vllm_k{args.top_k}"),
                   "--alpha", str(args.alpha), "--temperature", str(args.temperature)]
        cotgen(*cmd, *_train_args(args, work), "--out", str(out), log=work / f"train-{mode}{args.tag}.log")
    return summarize(out)


def summarize(out: Path) -> dict:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train = [r for r in rows if r["mode"] == "train"]
    evals = [(r["step"], r["loss"]) for r in rows if r["mode"] == "eval"]
    steady = [r for r in train if r["step"] > 1]
    return {"eval_nll": evals, "final_eval_nll": evals[-1][1], "first_eval_nll": evals[0][1],
            "train_loss_first_last": [train[0]["loss"], train[-1]["loss"]],
            "train_ce_first_last": [train[0].get("distill/ce", train[0]["loss"]),
                                    train[-1].get("distill/ce", train[-1]["loss"])],
            "kl_first_last": [train[0].get("distill/kl"), train[-1].get("distill/kl")],
            "step_time_s": sum(r["step_time_s"] for r in steady) / max(len(steady), 1),
            "curve": [(r["step"], r["loss"], r.get("distill/ce", r["loss"]), r.get("distill/kl")) for r in train]}


def stage_report(args, work: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {p.name: summarize(p) for p in sorted((work / "runs").iterdir()) if (p / "metrics.jsonl").is_file()}
    report["train"] = runs
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), dpi=100)
    for mode, r in runs.items():
        steps = [c[0] for c in r["curve"]]
        axes[0].plot(steps, [c[2] for c in r["curve"]], label=mode, linewidth=1)
        later = [(s, v) for s, v in r["eval_nll"] if s > 0] or r["eval_nll"]  # step 0 (~18 nats) hides the gaps
        axes[1].plot(*zip(*later), "o-", label=mode, markersize=3)
        if r["curve"][0][3] is not None:
            axes[2].plot(steps, [c[3] for c in r["curve"]], label=mode, linewidth=1)
    for ax, title in zip(axes, ("train cross entropy (completion tokens)", "held-out NLL (validation; after step 0)",
                                "KL to the teacher (train)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(work / "distill_curves.png")
    if "sft" in runs:
        report["held_out_nll"] = {m: r["final_eval_nll"] for m, r in runs.items()}
        report["ratios_vs_sft"] = {f"{m}_nll_minus_sft": r["final_eval_nll"] - runs["sft"]["final_eval_nll"]
                                   for m, r in runs.items() if m != "sft"}
        report["step_time_vs_sft"] = {m: r["step_time_s"] / runs["sft"]["step_time_s"] for m, r in runs.items()}
    for mode, r in runs.items():
        print(f"{mode:8s} held-out NLL {r['first_eval_nll']:.4f} -> {r['final_eval_nll']:.4f}  "
              f"train CE {r['train_ce_first_last'][0]:.3f} -> {r['train_ce_first_last'][1]:.3f}  "
              f"KL {r['kl_first_last']}  {r['step_time_s']:.2f} s/step")
    print(f"curves -> {work / 'distill_curves.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None,
                        help="folder kept between stages (default: a temporary folder, removed at the end)")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--teacher", default="gemma-3-270m")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--train", type=int, default=240)
    parser.add_argument("--val", type=int, default=60)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--top-k-large", type=int, default=256)
    parser.add_argument("--compare", type=int, default=48, help="examples for the producer comparison; 0: skip it")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--teacher-traces", type=int, default=0,
                        help="data: sample the text from the teacher on this many GSM8K train questions "
                             "(default: GSM8K reference solutions)")
    parser.add_argument("--teacher-temperature", type=float, default=1.0)
    parser.add_argument("--teacher-max-tokens", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0, help="training seed (data order) of every run")
    parser.add_argument("--tag", default="", help="suffix of the training runs' folder names")
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None, help="write the report here as JSON")
    args = parser.parse_args()
    if args.work is None:
        with tempfile.TemporaryDirectory(prefix="bench_distill-") as tmp:
            args.work = Path(tmp)
            run(args)
    else:
        args.work.mkdir(parents=True, exist_ok=True)
        run(args)


def run(args) -> None:
    path = args.work / "report.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    report["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    for stage in args.stages.split(","):
        start = time.perf_counter()
        if stage == "data":
            report["data"] = stage_data(args, args.work)
        elif stage == "student":
            report["student"] = stage_student(args, args.work)
        elif stage == "logits":
            report["logits"] = stage_logits(args, args.work)
        elif stage in ("sft", "online", "offline"):
            report.setdefault("train", {})[stage + args.tag] = stage_train(args, args.work, stage)
        elif stage == "report":
            stage_report(args, args.work, report)
        else:
            sys.exit(f"unknown stage {stage}; stages: {', '.join(STAGES)}")
        report.setdefault("stage_wall_s", {})[stage] = round(time.perf_counter() - start, 1)
        print(f"stage {stage}: {time.perf_counter() - start:.0f} s", flush=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report -> {args.out}")


if __name__ == "__main__":
    main()
