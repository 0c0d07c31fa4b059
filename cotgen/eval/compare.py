"""`cotgen eval --compare A B`: two eval runs side by side, paired over the problems they share.

Both runs' `samples.parquet` are reduced to per-problem values (`metrics.per_problem`) and joined on problem_id.
For each metric the table gives A, B (means over the shared problems), B - A and a paired confidence interval:
the percentile interval of a paired bootstrap over problems (the same `resamples` index draws, from a fixed seed,
for every metric), and whether it excludes zero. Greedy correctness also gets McNemar's exact test (a two-sided
binomial test on the discordant pairs, `scipy.stats.binomtest`). Protocol fields that differ between the runs
are listed, since numbers from different protocols are not comparable (published Gemma 3 1B GSM8K figures span
34-62.8).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl

from cotgen.errors import CotgenError, InputError
from cotgen.eval import metrics
from cotgen.eval.records import read_samples

RESAMPLES = 10_000
SEED = 0
CONFIDENCE = 0.95
# per-problem column -> metric name; pass@k / maj@k columns keep their names under "sampled/"
PER_PROBLEM = {"greedy_correct": "greedy/pass@1", "greedy_format_ok": "greedy/format_rate",
               "greedy_truncated": "greedy/truncation_rate", "greedy_tokens": "greedy/length_mean",
               "greedy_faithful": "greedy/faithful_rate", "greedy_wrong_step": "greedy/wrong_step_rate"}
PROTOCOL_KEYS = ("model", "source", "split", "prompt_style", "shots", "shots_k", "k", "temperature", "top_p",
                 "max_tokens", "seed", "data_sha256", "extraction", "backend")


@dataclasses.dataclass
class Comparison:
    a: str
    b: str
    shared: int
    only_a: int
    only_b: int
    rows: list[dict]  # metric, a, b, diff, lo, hi, excludes_zero
    mcnemar: dict | None  # a_only, b_only (problems only that run solved greedily), p_value
    protocol_diff: dict[str, tuple]
    resamples: int
    seed: int
    confidence: float


def paired_bootstrap(diffs: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED,
                     confidence: float = CONFIDENCE, chunk: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the mean of each column of `diffs` (P problems, M metrics) over `resamples`
    resamplings of the problems with replacement. Returns (lo, hi), each (M,)."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.ndim == 1:
        diffs = diffs[:, None]
    p = diffs.shape[0]
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, diffs.shape[1]))
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        idx = rng.integers(0, p, size=(stop - start, p))  # (R, P)
        means[start:stop] = diffs[idx].mean(axis=1)  # (R, P, M) -> (R, M)
    alpha = (1 - confidence) / 2
    return np.quantile(means, alpha, axis=0), np.quantile(means, 1 - alpha, axis=0)


def mcnemar(a: np.ndarray, b: np.ndarray) -> dict:
    """McNemar's exact test on paired booleans: the discordant pairs under H0 split 50/50."""
    from scipy.stats import binomtest

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if a_only + b_only == 0 else float(binomtest(b_only, a_only + b_only, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": p}


def compare(a_dir: str | Path, b_dir: str | Path, *, resamples: int = RESAMPLES, seed: int = SEED,
            confidence: float = CONFIDENCE) -> Comparison:
    runs = [_load(Path(d)) for d in (a_dir, b_dir)]
    (pa, proto_a), (pb, proto_b) = runs
    joined = pa.join(pb, on="problem_id", how="inner", suffix="_b", maintain_order="left")
    if joined.height == 0:
        raise CotgenError(f"{a_dir} and {b_dir} share no problem: compare runs on the same source and split")
    columns = [c for c in pa.columns if c in pb.columns and (c in PER_PROBLEM or c.startswith(("pass@", "maj@")))
               and joined[c].null_count() == 0 and joined[f"{c}_b"].null_count() == 0]
    columns.sort(key=_order)
    a = np.column_stack([joined[c].cast(pl.Float64).to_numpy() for c in columns])
    b = np.column_stack([joined[f"{c}_b"].cast(pl.Float64).to_numpy() for c in columns])
    lo, hi = paired_bootstrap(b - a, resamples=resamples, seed=seed, confidence=confidence)
    rows = []
    for j, col in enumerate(columns):
        diff = float((b[:, j] - a[:, j]).mean())
        rows.append({"metric": PER_PROBLEM.get(col, f"sampled/{col}"), "a": float(a[:, j].mean()),
                     "b": float(b[:, j].mean()), "diff": diff, "lo": float(lo[j]), "hi": float(hi[j]),
                     "excludes_zero": bool(lo[j] > 0 or hi[j] < 0)})
    test = None
    if "greedy_correct" in columns:
        test = mcnemar(joined["greedy_correct"].to_numpy(), joined["greedy_correct_b"].to_numpy())
    shared = set(joined["problem_id"])
    diff = {k: (proto_a.get(k), proto_b.get(k)) for k in PROTOCOL_KEYS if proto_a.get(k) != proto_b.get(k)}
    return Comparison(str(a_dir), str(b_dir), len(shared), pa.height - len(shared), pb.height - len(shared),
                      rows, test, diff, resamples, seed, confidence)


def _load(folder: Path) -> tuple[pl.DataFrame, dict]:
    if not folder.is_dir():
        raise CotgenError(f"{folder}: no such eval folder (expected the --out of a `cotgen eval` run)")
    samples = read_samples(folder / "samples.parquet")
    return metrics.per_problem(samples), read_protocol(folder / "metrics.json")


def read_protocol(path: Path) -> dict:
    """The `protocol` object of an eval run's metrics.json ({} when the file is absent)."""
    from cotgen.io import read_json

    if not path.is_file():
        return {}
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise InputError(path, f"expected a JSON object, got {type(doc).__name__}")
    protocol = doc.get("protocol", {})
    if not isinstance(protocol, dict):
        raise InputError(path, f"expected a JSON object, got {type(protocol).__name__}", field="protocol")
    return protocol


def _order(column: str) -> tuple:
    if column in PER_PROBLEM:
        return (0, list(PER_PROBLEM).index(column), 0)
    kind, _, k = column.partition("@")
    return (1, kind != "pass", int(k))


def render(c: Comparison) -> str:
    """The comparison as Markdown: a header, the table, McNemar's test and protocol differences."""
    pct = round(c.confidence * 100)
    setup = (f"- {c.shared} shared problems (only in A: {c.only_a}, only in B: {c.only_b}); paired bootstrap "
             f"over problems, {c.resamples} resamples, seed {c.seed}, {pct}% percentile interval")
    lines = ["# Eval comparison: B - A", "", f"- A: `{c.a}`", f"- B: `{c.b}`", setup, "",
             f"| metric | A | B | B - A | {pct}% CI | excludes 0 |", "|---|---:|---:|---:|---|---|"]
    for r in c.rows:
        lines.append(f"| {r['metric']} | {_num(r['a'])} | {_num(r['b'])} | {_num(r['diff'], sign=True)} | "
                     f"[{_num(r['lo'], sign=True)}, {_num(r['hi'], sign=True)}] | "
                     f"{'yes' if r['excludes_zero'] else 'no'} |")
    if c.mcnemar is not None:
        m = c.mcnemar
        verdict = "differs" if m["p_value"] < 1 - c.confidence else "does not differ"
        lines += ["", (f"McNemar exact test, greedy correctness: A alone right on {m['a_only']}, B alone on "
                       f"{m['b_only']}; p = {m['p_value']:.4g} (at {1 - c.confidence:.2g}: {verdict}).")]
    if c.protocol_diff:
        lines += ["", "Protocols differ (numbers are not directly comparable):"]
        lines += [f"- {k}: A {a!r}, B {b!r}" for k, (a, b) in c.protocol_diff.items()]
    return "\n".join(lines) + "\n"


def _num(x: float, sign: bool = False) -> str:
    return f"{x:+.4f}" if sign else f"{x:.4f}"


def to_json(c: Comparison) -> str:
    doc = dataclasses.asdict(c)
    doc["protocol_diff"] = {k: list(v) for k, v in c.protocol_diff.items()}
    return json.dumps(doc, indent=2) + "\n"
