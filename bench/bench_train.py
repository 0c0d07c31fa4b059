"""Benchmark `cotgen train`: packing vs no packing, and full vs LoRA vs QLoRA, on GSM8K-length examples.

The examples are GSM8K train problems in the student format (cotgen's student prompt; the reference solution,
with its <<calculator>> annotations removed, as the reasoning; the final number as the answer), tokenized by
the model's own tokenizer. Every configuration is a real `cotgen.train.sft.run` in its own subprocess (so each
reports its own peak RSS from `resource.getrusage`), trained for `--steps` steps; step time and useful
(non-padding) tokens/s are the means over the steps after the first (which includes compilation), read from
the run's metrics.jsonl. The packing gain is timed against both ways of padding unpacked rows: to --max-len
(what the trainer does) and to each batch's longest row rounded up to 64 (dynamic padding: the
`lora_unpacked_longest` arm trims every batch the trainer is fed, so it pays one compilation per new width,
counted in its step times; the `_seen_shapes` figures leave those steps out). Also reported, from the batch
plans alone: the share of real tokens per batch under each of the three layouts. `lora_packed_full_logits`
is `lora_packed` with the logits of every position decoded (the trainer before it decoded only the targets'
positions, `cotgen.train.data`'s `select`): the ratio is what decoding the targets alone saves.

    flock /tmp/cotgen-heavy.lock .venv/bin/python bench/bench_train.py --out /tmp/bench_train.json
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CONFIGS = {  # name -> TrainConfig overrides
    "lora_packed": {"lora_rank": 16, "packing": True},
    "lora_unpacked": {"lora_rank": 16, "packing": False},
    "lora_unpacked_longest": {"lora_rank": 16, "packing": False},  # + batches padded to their longest row
    "lora_packed_full_logits": {"lora_rank": 16, "packing": True},  # + no `select`: every position decoded
    "full_packed": {"packing": True},
    "qlora_packed": {"qlora": True, "packing": True},
}
PAD_TO_LONGEST = {"lora_unpacked_longest"}
FULL_LOGITS = {"lora_packed_full_logits"}
MULTIPLE = 64  # dynamic padding rounds each batch's width up to this


def gsm8k_examples(path: Path, limit: int) -> list[dict]:
    from cotgen import prompts

    rows = []
    for line in path.read_text(encoding="utf-8").splitlines()[:limit]:
        item = json.loads(line)
        reasoning, _, answer = item["answer"].rpartition("####")
        reasoning = re.sub(r"<<[^>]*>>", "", reasoning).strip()
        rows.append({"prompt": prompts.student_prompt(item["question"]),
                     "completion": prompts.student_target(reasoning, answer.strip().replace(",", ""))})
    return rows


def pad_to_longest(widths: list[int]) -> None:
    """Feed the trainer each batch cut to its longest row rounded up to MULTIPLE instead of --max-len (the
    trainer builds batches with `data.make_batch`); each batch's width, in step order, goes to `widths`."""
    from cotgen.train import data

    make = data.make_batch

    def trimmed(rows, tok, batch_size, max_len, pad_id=0, targets=None):
        batch = make(rows, tok, batch_size, max_len, pad_id, targets)
        used = int(np.nonzero(batch["segments"].any(axis=0))[0].max()) + 1
        width = min(max_len, MULTIPLE * -(-used // MULTIPLE))
        widths.append(width)
        return {k: v[:, :width] for k, v in batch.items()}

    data.make_batch = trimmed


def full_logits() -> None:
    """Feed the trainer batches without `select`, so the loss decodes the logits of every position."""
    from cotgen.train import data

    make = data.make_batch

    def whole(*args, **kwargs):
        batch = make(*args, **kwargs)
        return {k: v for k, v in batch.items() if k not in ("select", "select_mask", "targets")}

    data.make_batch = whole


def one(args_json: str) -> None:
    """Child process: train one configuration, print its measurements as JSON."""
    from cotgen.train.config import TrainConfig
    from cotgen.train.sft import run

    spec = json.loads(args_json)
    widths: list[int] = []
    if spec.get("pad_to_longest"):
        pad_to_longest(widths)
    if spec.get("full_logits"):
        full_logits()
    state = run(TrainConfig(**spec["config"]))
    metrics = Path(spec["config"]["out"]) / "metrics.jsonl"
    from cotgen.train.metrics import read

    rows = read(metrics)
    steady = [r for r in rows if r["mode"] == "train" and r["step"] > 1]
    step_time = sum(r["step_time_s"] for r in steady) / len(steady)
    # steps whose batch width was compiled before (all of them when every batch has the same width)
    seen = [r for r in steady if not widths or widths[r["step"] - 1] in widths[:r["step"] - 1]]
    print("RESULT " + json.dumps({
        "step_time_s": step_time,
        "first_step_s": rows[0]["step_time_s"],
        "useful_tokens_per_s": sum(r["real_tokens"] for r in steady) / sum(r["step_time_s"] for r in steady),
        "useful_tokens_per_s_seen_shapes": (sum(r["real_tokens"] for r in seen)
                                            / sum(r["step_time_s"] for r in seen)) if seen else None,
        "batch_widths": widths or None,
        "loss_tokens_per_s": sum(r["loss_tokens"] for r in steady) / sum(r["step_time_s"] for r in steady),
        "real_tokens_per_step": sum(r["real_tokens"] for r in steady) / len(steady),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "first_loss": state["first_loss"], "last_loss": state["last_loss"], "fill": state["fill"],
        "examples": state["examples"],
    }))


def plan_fill(args, data_file: Path) -> dict:
    """Real-token share of one epoch's batches: packed, padded to max_len, padded to the longest (x64)."""
    from cotgen.models.load import load
    from cotgen.train import data

    tokenizer = load(args.model).tokenizer if args.model == "tiny" else _tokenizer(args.model)
    tok = data.tokenize(data.read_examples(data_file), tokenizer, tokenizer.piece_to_id("<end_of_turn>"),
                        args.max_len)
    kw = dict(batch_size=args.batch_size, max_len=args.max_len, seed=0, window=512, epochs=1)
    packed = data.plan(tok.lengths, packing=True, **kw)
    unpacked = data.plan(tok.lengths, packing=False, **kw)
    grid = args.batch_size * args.max_len
    longest = [data.batch_tokens(b, tok)[0] / (args.batch_size * min(args.max_len, MULTIPLE * int(np.ceil(
        max(len(tok.ids[r[0]]) for r in b) / MULTIPLE)))) for b in unpacked.batches]
    return {
        "examples": len(tok.ids), "mean_length": float(tok.lengths.mean()),
        "max_length": int(tok.lengths.max()),
        "steps_per_epoch": {"packed": packed.steps, "unpacked": unpacked.steps},
        "real_token_fraction": {
            "packed": data.fill(packed, tok, args.batch_size, args.max_len)["real_token_fraction"],
            "unpacked_pad_to_max_len": data.fill(unpacked, tok, args.batch_size, args.max_len)[
                "real_token_fraction"],
            "unpacked_pad_to_longest_x64": float(np.mean(longest)),
        },
        "grid_tokens_per_step": grid,
    }


def _tokenizer(spec: str):
    from cotgen.models import resolve
    from cotgen.models.tokenizer import Tokenizer

    return Tokenizer.from_folder(resolve(spec).path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--examples", type=int, default=256, help="GSM8K train problems to draw from")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None, help="write the report here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the runs' folders (checkpoints are large)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args.one)

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        _bench(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _bench(args, work: Path) -> None:
    data_file = work / "gsm8k.jsonl"
    rows = gsm8k_examples(args.data_dir / "gsm8k" / "train.jsonl", args.examples)
    data_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = {"model": args.model, "steps": args.steps, "batch_size": args.batch_size,
              "max_len": args.max_len, "plan": plan_fill(args, data_file), "runs": {}}
    print(json.dumps(report["plan"], indent=2), flush=True)
    for name in args.configs.split(","):
        config = {"model": args.model, "data": str(data_file), "out": str(work / name), "steps": args.steps,
                  "batch_size": args.batch_size, "max_len": args.max_len, "lr": 1e-4, "save_every": 10_000,
                  "tensorboard": False, **CONFIGS[name]}
        spec = {"config": config, "pad_to_longest": name in PAD_TO_LONGEST, "full_logits": name in FULL_LOGITS}
        res = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True,
                             text=True)
        line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
        if res.returncode != 0 or line is None:
            report["runs"][name] = {"error": res.stderr[-2000:]}
            print(f"{name}: FAILED\n{res.stderr[-2000:]}", flush=True)
            continue
        report["runs"][name] = json.loads(line[len("RESULT "):])
        r = report["runs"][name]
        print(f"{name:22s} {r['step_time_s']:7.2f} s/step  {r['useful_tokens_per_s']:8.0f} useful tok/s  "
              f"{r['loss_tokens_per_s']:7.0f} loss tok/s  peak {r['peak_rss_gb']:.2f} GB  "
              f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}", flush=True)
    runs = report["runs"]

    def ratio(a, b, key):
        if "error" in runs.get(a, {"error": 1}) or "error" in runs.get(b, {"error": 1}):
            return None
        return runs[a][key] / runs[b][key]

    report["ratios"] = {
        "packed_vs_unpacked_useful_tokens_per_s": ratio("lora_packed", "lora_unpacked",
                                                        "useful_tokens_per_s"),
        "packed_vs_unpacked_longest_useful_tokens_per_s": ratio("lora_packed", "lora_unpacked_longest",
                                                                "useful_tokens_per_s"),
        "packed_vs_unpacked_longest_useful_tokens_per_s_seen_shapes": ratio(
            "lora_packed", "lora_unpacked_longest", "useful_tokens_per_s_seen_shapes"),
        "full_logits_vs_selected_step_time": ratio("lora_packed_full_logits", "lora_packed", "step_time_s"),
        "full_vs_lora_step_time": ratio("full_packed", "lora_packed", "step_time_s"),
        "qlora_vs_lora_step_time": ratio("qlora_packed", "lora_packed", "step_time_s"),
        "full_vs_lora_peak_rss": ratio("full_packed", "lora_packed", "peak_rss_gb"),
        "qlora_vs_lora_peak_rss": ratio("qlora_packed", "lora_packed", "peak_rss_gb"),
    }
    packing = [(other, runs[other]["useful_tokens_per_s"], ratio("lora_packed", other, "useful_tokens_per_s"))
               for other in ("lora_unpacked", "lora_unpacked_longest")
               if "error" not in runs.get(other, {"error": 1})]
    if packing and "error" not in runs.get("lora_packed", {"error": 1}):
        print(f"packing gain (useful tok/s): packed {runs['lora_packed']['useful_tokens_per_s']:.0f}  "
              + "  ".join(f"vs {name} {tps:.0f} (x{r:.2f})" for name, tps, r in packing), flush=True)
    print(json.dumps(report["ratios"], indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report -> {args.out}")


if __name__ == "__main__":
    main()
