"""Benchmark cotgen's verifier against math-verify alone, side by side in one run on the same pairs, and the
whole `cotgen filter` pipeline on synthetic traces.

1. GSM8K-style, one core (POLARS_MAX_THREADS=1, one process): completion texts built from the GSM8K test golds
   in the formats models write (`<answer>$1,080</answer>`, `#### 1080`, "The answer is 1,080.", units,
   trailing periods), 40% of them wrong. cotgen: extraction ladder + Polars numeric path
   (`score_completions`);
   math-verify: `parse(text)`, `parse(gold)`, `verify` per pair (its defaults). Pairs/s each, the ratio, and
   the accuracy of each against the known labels. Also both on extracted answers only.
2. MATH LaTeX: unique (pred, gold) pairs built from the MATH-500 answers (same, rewritten, or wrong).
   cotgen's symbolic path with 1 and 2 worker processes vs math-verify in one process (wrapped in \\boxed{}).
3. Labelled sets: agreement of cotgen and of wrapped math-verify on the tuned pairs
   (tests/data/verifier_pairs.jsonl, extracted answers), and on the held-out completions written before the
   issue-14 changes (tests/data/verifier/heldout_pairs.jsonl; cotgen `score_completions`, non-strict as eval
   scores, vs math-verify `parse(completion)`), as exact counts.
4. Stall inputs (issue 14): about 40 characters each (deep bare brackets, factorials, towers) that cost a full
   worker time-out before the cost screen. Pairs/s without the screen (parent and worker screen patched out)
   and with it, side by side, and the ratio.
5. Steps (issue 19, `cotgen.verify.steps`) on GSM8K train's reference solutions: every `<<expr=value>>` note
   checked alone (agreement: they are GSM8K's own calculator output), the same solutions with one computed note's
   result broken (+1, x10 or -1: each should show a wrong step), and the whole solutions' prose claims by verdict;
   steps/s and solutions/s of the step checker beside the answer verifier's pairs/s on the same texts, one core.
6. --traces N: `cotgen filter` end to end on N synthetic GSM8K traces (8 per problem) in a subprocess:
   seconds, traces/s, peak RSS.

    flock /tmp/cotgen-heavy.lock .venv/bin/python bench/bench_filter.py --traces 1000000 \
        --out /tmp/bench_filter.json
"""

from __future__ import annotations

import os

os.environ.setdefault("POLARS_MAX_THREADS", "1")  # section 1 is "one core"; must precede the polars import

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def gsm8k_pairs(n: int, seed: int) -> tuple[list[str], list[str], list[bool], list[str]]:
    """(completions, golds, labels, the answer written) from GSM8K test golds."""
    import polars as pl

    golds = (
        pl.read_ndjson(DATA / "gsm8k" / "test.jsonl")["answer"]
        .str.extract(r"####\s*(.+)$")
        .str.replace_all(",", "")
        .to_list()
    )
    rng = random.Random(seed)
    texts, gs, labels, written = [], [], [], []
    for i in range(n):
        gold = golds[i % len(golds)]
        value = int(gold)
        right = rng.random() >= 0.4
        shown = value if right else rng.choice([value + 1, value - 1, value * 10, value + 100, -value or 7])
        form = rng.choice(
            [f"{shown:,}", f"${shown:,}", f"{shown}.00", f"{shown} dollars", f"{shown}.", str(shown)]
        )
        steps = f"She starts with {rng.randint(2, 90)} and buys {rng.randint(2, 40)} more, so 3 * 4 = 12."
        text = rng.choice(
            [
                f"<reasoning>{steps}</reasoning>\n<answer>{form}</answer>",
                f"{steps}\n#### {form}",
                f"{steps} The answer is {form}.",
                f"{steps} So the total is \\boxed{{{form.replace('$', '')}}}.",
            ]
        )
        texts.append(text)
        gs.append(gold)
        labels.append(right)
        written.append(form)
    return texts, gs, labels, written


def math_pairs(seed: int) -> tuple[list[str], list[str], list[bool]]:
    import polars as pl

    answers = pl.read_ndjson(DATA / "math500" / "test.jsonl")["answer"].to_list()
    rng = random.Random(seed)
    preds, golds, labels = [], [], []
    for i, gold in enumerate(answers):
        kind = i % 3
        if kind == 0:
            pred, label = gold, True
        elif kind == 1:
            pred, label = gold.replace("\\frac", "\\dfrac").replace(" ", ""), True
        else:
            pred, label = answers[(i + rng.randint(1, 50)) % len(answers)], False
            if pred == gold:
                continue
        preds.append(pred)
        golds.append(gold)
        labels.append(label)
    return preds, golds, labels


def mv_check(pred: str | None, gold: str, wrap: bool) -> bool:
    from math_verify import parse, verify

    from cotgen.verify.symbolic import wrap as wrapped

    if pred is None:
        return False
    try:
        return bool(verify(parse(wrapped(gold) if wrap else gold), parse(wrapped(pred) if wrap else pred)))
    except Exception:
        return False


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def accuracy(got, labels) -> float:
    return round(sum(bool(g) == want for g, want in zip(got, labels)) / len(labels), 4)


def section_gsm8k(n: int, seed: int) -> dict:
    from cotgen.verify.verifier import Verifier

    texts, golds, labels, written = gsm8k_pairs(n, seed)
    mv_check("1", "1", False)  # math-verify's first call warms ANTLR and sympy up (0.3 s); not timed
    with Verifier(workers=1) as v:
        v.score_completions(texts[:10], golds[:10])
        ours, t_ours = timed(lambda: v.score_completions(texts, golds)["correct"].to_list())
        ours_a, t_ours_a = timed(lambda: [x.correct for x in v.verify(written, golds)])
        symbolic = v.symbolic_pairs
    k = min(n, 3000)  # math-verify is slow: time it on a prefix
    mv, t_mv = timed(lambda: [mv_check(t, g, False) for t, g in zip(texts[:k], golds[:k])])
    mv_a, t_mv_a = timed(lambda: [mv_check(a, g, True) for a, g in zip(written[:k], golds[:k])])
    def side_by_side(t_cotgen, t_mv, got, got_mv) -> dict:
        return {"cotgen_pairs_per_s": round(n / t_cotgen), "math_verify_pairs_per_s": round(k / t_mv),
                "ratio": round((n / t_cotgen) / (k / t_mv), 1), "cotgen_accuracy": accuracy(got, labels),
                "math_verify_accuracy": accuracy(got_mv, labels[:k])}

    return {"pairs": n, "math_verify_pairs": k, "symbolic_pairs_sent": symbolic,
            "completions": side_by_side(t_ours, t_mv, ours, mv),
            "answers_only": side_by_side(t_ours_a, t_mv_a, ours_a, mv_a)}


def section_math(seed: int, workers: list[int]) -> dict:
    from cotgen.verify.verifier import Verifier

    preds, golds, labels = math_pairs(seed)
    mv_check("1", "1", True)
    mv, t_mv = timed(lambda: [mv_check(p, g, True) for p, g in zip(preds, golds)])
    out = {
        "pairs": len(preds),
        "math_verify": {"pairs_per_s": round(len(preds) / t_mv, 1), "accuracy": accuracy(mv, labels)},
    }
    for w in workers:
        with Verifier(workers=w) as v:
            v.verify(["\\sqrt{2}"], ["\\sqrt{2}"])  # start the workers (about a second each); not timed
            got, t = timed(lambda: [x.correct for x in v.verify(preds, golds)])
            out[f"cotgen_workers_{w}"] = {
                "pairs_per_s": round(len(preds) / t, 1),
                "accuracy": accuracy(got, labels),
                "symbolic_pairs": v.symbolic_pairs - 1,
            }
    return out


def agree(got, labels) -> str:
    return f"{sum(bool(g) == want for g, want in zip(got, labels))}/{len(labels)}"


def section_labelled() -> dict:
    from cotgen.verify.verifier import Verifier

    pairs = [json.loads(line) for line in (ROOT / "tests" / "data" / "verifier_pairs.jsonl").open()]
    labels = [p["equal"] for p in pairs]
    with Verifier(workers=2) as v:
        ours = [x.correct for x in v.verify([p["pred"] for p in pairs], [p["gold"] for p in pairs])]
        mv = [mv_check(p["pred"] or None, p["gold"], True) for p in pairs]
        out = {
            "pairs": len(pairs),
            "cotgen_agreement": accuracy(ours, labels),
            "math_verify_agreement": accuracy(mv, labels),
            "tuned": {"cotgen": agree(ours, labels), "math_verify_wrapped": agree(mv, labels)},
        }
        # heldout: written before the issue-14 changes; fresh: written after them, before their first score
        for name in ("heldout", "fresh"):
            held_file = ROOT / "tests" / "data" / "verifier" / f"{name}_pairs.jsonl"
            held = [json.loads(line) for line in held_file.open()]
            want = [p["equal"] for p in held]
            got = v.score_completions([p["completion"] for p in held], [p["gold"] for p in held])["correct"]
            mv_held = [mv_check(p["completion"], p["gold"], False) for p in held]
            out[name] = {"cotgen": agree(got, want), "math_verify": agree(mv_held, want)}
    return out


# About 40 characters each, one a line; before the cost screen each one held a worker to its time-out. The
# same file parametrizes tests/test_filter_sandbox.py.
STALLS = (ROOT / "tests" / "data" / "verifier" / "stalls.txt").read_text(encoding="utf-8").splitlines()


if __name__ == "bench_filter":  # imported as a worker's target (section_stall): import before the lock-down
    import cotgen.verify.symbolic  # noqa: F401


def unscreened_check(item):
    """symbolic.check with the cost screen off: the "before" arm of section_stall, run inside a worker."""
    from cotgen.verify import sandbox, symbolic

    sandbox._costly = lambda text: None
    return symbolic.check(item)


def section_stall(timeout_s: float, workers: int) -> dict:
    from unittest import mock

    from cotgen.verify import sandbox
    from cotgen.verify.verifier import Verifier

    golds = ["\\sqrt{2}"] * len(STALLS)
    with mock.patch.object(sandbox, "_costly", lambda text: None), Verifier(
        workers=workers, timeout_s=timeout_s
    ) as v:
        v._pool = sandbox.WorkerPool(
            f"{Path(__file__).stem}:unscreened_check", workers=workers, timeout_s=timeout_s,
            memory_mb=v.memory_mb,
        )
        before, t_before = timed(lambda: [x.status for x in v.verify(STALLS, golds)])
    with Verifier(workers=workers, timeout_s=timeout_s) as v:
        after, t_after = timed(lambda: [x.status for x in v.verify(STALLS, golds)])
        started = v._pool is not None
    rate_before, rate_after = len(STALLS) / t_before, len(STALLS) / t_after
    return {
        "pairs": len(STALLS), "workers": workers, "timeout_s": timeout_s,
        "before": {"pairs_per_s": round(rate_before, 3), "statuses": before},
        "after": {"pairs_per_s": round(rate_after, 1), "statuses": after, "worker_started": started},
        "ratio": round(rate_after / rate_before),
    }  # fmt: skip


def section_steps(seed: int) -> dict:
    import re
    from fractions import Fraction

    from cotgen.verify.steps import check_work
    from cotgen.verify.verifier import Verifier

    rows = [json.loads(line) for line in (DATA / "gsm8k" / "train.jsonl").open()]
    texts, golds = [r["answer"] for r in rows], [r["answer"].rpartition("####")[2].strip() for r in rows]
    notes = [m.group(0) for t in texts for m in re.finditer(r"<<[^<>]*>>", t)]
    note_verdicts = [s.verdict for n in notes for s in check_work(n).steps]
    rng, broken = random.Random(seed), []
    for t in texts:
        found = list(re.finditer(r"<<([^<>=]*[-+*/][^<>=]*)=(\d+(?:\.\d+)?)>>", t))
        if found:
            m = rng.choice(found)
            value, places = Fraction(m.group(2)), len(m.group(2).partition(".")[2])
            wrong = rng.choice([value + 1, value * 10, value - 1])
            broken.append(t[:m.start()] + f"<<{m.group(1)}={float(wrong):.{places}f}>>" + t[m.end():])
    works, t_steps = timed(lambda: [check_work(t) for t in texts])
    caught = sum(check_work(t).wrong > 0 for t in broken)
    steps = sum(len(w.steps) for w in works)
    with Verifier(workers=1) as v:
        v.score_completions(texts[:10], golds[:10])
        _, t_answers = timed(lambda: v.score_completions(texts, golds))
    return {"solutions": len(texts),
            "notes": {"n": len(notes), **{k: note_verdicts.count(k) for k in ("right", "wrong", "unchecked")}},
            "broken_notes": {"n": len(broken), "caught": caught},
            "prose_claims": {k: sum(getattr(w, k) for w in works) for k in ("right", "wrong", "unchecked")},
            "solutions_with_wrong_step": sum(w.wrong > 0 for w in works),
            "steps_per_s": round(steps / t_steps), "solutions_per_s": round(len(texts) / t_steps),
            "answer_verifier_pairs_per_s": round(len(texts) / t_answers),
            "ratio_answer_verifier_to_step_checker": round(t_steps / t_answers, 1)}


def make_traces(folder: Path, n: int, seed: int) -> Path:
    """n synthetic GSM8K train traces, 8 per problem, in 100k-row shards, with a problems file."""
    import polars as pl

    from cotgen.schemas import TRACE_SCHEMA
    from cotgen.sources import load_problems

    problems = load_problems("gsm8k", "train", data_dir=DATA)
    problems.write_parquet(folder / "problems.parquet")
    rng = random.Random(seed)
    traces = folder / "traces"
    traces.mkdir()
    ids, golds = problems["id"].to_list(), problems["answer"].to_list()
    for shard, start in enumerate(range(0, n, 100_000)):
        rows = []
        for i in range(start, min(n, start + 100_000)):
            p = (i // 8) % len(ids)
            answer = golds[p] if rng.random() < 0.7 else str(int(golds[p]) + 1)
            steps = " ".join(
                f"Step {k}: {rng.randint(1, 99)} + {rng.randint(1, 99)} = {rng.randint(2, 198)}."
                for k in range(rng.randint(3, 12))
            )
            completion = f"<reasoning>{steps}</reasoning>\n<answer>{answer}</answer>"
            rows.append(
                dict(
                    problem_id=ids[p],
                    sample_idx=i % 8 + 8 * (i // (8 * len(ids))),
                    completion=completion,
                    finish_reason="length" if rng.random() < 0.03 else "stop",
                    prompt_tokens=100,
                    completion_tokens=len(completion) // 4,
                    teacher="synthetic",
                    seed=i,
                )
            )
        df = pl.DataFrame(rows).with_columns(
            [pl.lit(None, t).alias(c) for c, t in TRACE_SCHEMA.items() if c not in rows[0]]
        )
        df.select(list(TRACE_SCHEMA.names())).cast(dict(TRACE_SCHEMA)).write_parquet(
            traces / f"traces-all-{shard:05d}.parquet"
        )
    return folder


def section_pipeline(n: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_traces(Path(tmp), n, seed)
        code = (
            "import json, resource, sys; from cotgen.filter.config import FilterConfig; "
            "from cotgen.filter.run import run; "
            f"s = run(FilterConfig(traces={str(folder / 'traces')!r}, out={str(folder / 'data')!r}, "
            f"problems={str(folder / 'problems.parquet')!r}, workers=1)); "
            "print(json.dumps({'seconds': s['seconds'], 'traces_per_s': s['traces_per_s'], "
            "'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
            "'funnel': s['funnel']}))"
        )
        env = {**os.environ, "POLARS_MAX_THREADS": os.environ.get("BENCH_PIPELINE_THREADS", "2")}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=False
        )
        if out.returncode:
            raise SystemExit(out.stderr)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["traces"] = n
        result["polars_threads"] = int(env["POLARS_MAX_THREADS"])
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--pairs", type=int, default=20_000, help="GSM8K-style pairs for cotgen (math-verify: 3000)."
    )
    ap.add_argument("--workers", default="1,2", help="Worker counts for the MATH section.")
    ap.add_argument("--traces", type=int, default=0, help="Also run the pipeline on N synthetic traces.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sections", default="gsm8k,math,labelled,stall,steps", help="Sections to run (comma list).")
    ap.add_argument("--stall-timeout", type=float, default=5.0, help="Per-item time-out, stall section.")
    ap.add_argument("--out", type=Path, default=None, help="Also write the JSON here.")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    report = {"cpu_count": os.cpu_count(), "polars_max_threads": os.environ["POLARS_MAX_THREADS"]}
    if "gsm8k" in sections:
        report["gsm8k"] = section_gsm8k(args.pairs, args.seed)
    if "math" in sections:
        report["math"] = section_math(args.seed, [int(w) for w in args.workers.split(",")])
    if "labelled" in sections:
        report["labelled"] = section_labelled()
    if "stall" in sections:
        report["stall"] = section_stall(args.stall_timeout, workers=2)
    if "steps" in sections:
        report["steps"] = section_steps(args.seed)
    if args.traces:
        report["pipeline"] = section_pipeline(args.traces, args.seed)
    report["bench_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
