"""What `cotgen filter` reports: stats.json, summary.md (the funnel, why rows went, pass rates) and two PNGs
(funnel.png, pass_rates.png), drawn with matplotlib's Agg backend.

The funnel counts traces left after each stage: traces -> gold_ok -> parsed -> correct -> passed_filters ->
unique -> uncontaminated -> kept. Each dropped trace is counted once, at the first stage it fails
(`run._reason`); `filters` also counts every quality filter on its own, over all traces and over correct ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from cotgen.filter.quality import FILTERS
from cotgen.io import atomic_path, write_text
from cotgen.verify.steps import work_ok_expr

STAGES = (
    ("gold_ok", ("bad_gold",)),
    ("parsed", ("unparsed",)),
    ("correct", ("wrong", "unverified")),
    ("passed_filters", FILTERS),
    ("work_ok", ("bad_work",)),
    ("unique", ("duplicate", "near_duplicate")),
    ("uncontaminated", ("contaminated",)),
    ("kept", ("over_limit",)),
)


def _counts(series: pl.Series) -> dict[str, int]:
    return {k: int(v) for k, v in series.drop_nulls().value_counts(sort=True).iter_rows()}


def stats(
    rows: pl.DataFrame,
    rates: pl.DataFrame,
    train: pl.DataFrame,
    val: pl.DataFrame,
    *,
    skipped: dict,
    references: int = 0,
    symbolic_pairs: int,
    seconds: float,
    peak_rss_mb: float,
) -> dict:
    reasons = _counts(rows["reason"])
    funnel = {"traces": rows.height}
    left = rows.height
    for stage, names in STAGES:
        left -= sum(reasons.get(n, 0) for n in names)
        funnel[stage] = left
    correct = rows.lazy().filter("correct").select(FILTERS).collect()
    rated = rates.filter(pl.col("pass_rate").is_not_null())
    return {
        "funnel": funnel,
        "drop_reasons": reasons,
        "filters": {
            "all_traces": {f: int(rows[f].sum()) for f in FILTERS},
            "correct_traces": {f: int(correct[f].sum()) for f in FILTERS},
        },
        "extraction": _counts(rows["method"]),
        "fallback_answers": int(rows["fallback"].sum()),
        "format_repaired": {"all_traces": int(rows["format_repaired"].sum()),
                            "kept": int(rows.filter("kept")["format_repaired"].sum())},
        "verification": {
            "status": _counts(rows["status"]),
            "path": _counts(rows["path"]),
            "symbolic_unique_pairs": symbolic_pairs,
        },
        "work": _work(rows, pl.concat([train, val])),
        "skipped": skipped,
        "reference_fallback": references,
        "problems": {
            "seen": rates.height,
            "bad_gold": rates.height - rated.height,
            "with_kept": int((rates["n_kept"] > 0).sum()),
            "always_solved": int((rated["pass_rate"] == 1).sum()),
            "never_solved": int((rated["pass_rate"] == 0).sum()),
            "mean_pass_rate": float(rated["pass_rate"].mean()) if rated.height else None,
            "contaminated": _counts(rates["contaminated_by"]),
        },
        "outputs": {
            "train_rows": train.height,
            "validation_rows": val.height,
            "train_problems": train["problem_id"].n_unique(),
            "validation_problems": val["problem_id"].n_unique(),
        },
        "seconds": round(seconds, 2),
        "traces_per_s": round(rows.height / seconds, 1) if seconds > 0 else None,
        "peak_rss_mb": round(peak_rss_mb, 1),
    }


def _work(rows: pl.DataFrame, records: pl.DataFrame) -> dict:
    """The arithmetic steps (`cotgen.verify.steps`) of the kept traces (the records, reference solutions
    included) and, when --require-work checked them, of every trace still in the running before it: traces with
    a wrong step, traces with no checked step, work ok, step counts by verdict."""
    out = {}
    checked = rows.filter(pl.col("steps_right").is_not_null())
    for name, df in (("checked_before_require_work", checked), ("kept", records)):
        if name != "kept" and checked.height == 0:
            continue
        df = df.select("steps_right", "steps_wrong", "steps_unchecked")
        out[name] = {
            "traces": df.height,
            "with_wrong_step": int((df["steps_wrong"] > 0).sum()),
            "without_checked_step": int(((df["steps_right"] + df["steps_wrong"]) == 0).sum()),
            "work_ok": int(df.select(work_ok_expr().sum()).item()),
            "steps": {k: int(df[f"steps_{k}"].sum()) for k in ("right", "wrong", "unchecked")},
        }
    return out


def _summary(stats: dict, rows: pl.DataFrame, cfg) -> str:
    f, total = stats["funnel"], max(stats["funnel"]["traces"], 1)
    lines = [
        f"# cotgen filter: {cfg.traces} -> {cfg.out}",
        "",
        "## Funnel",
        "",
        "| stage | traces | % |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v} | {100 * v / total:.1f} |" for k, v in f.items()]
    lines += [
        "",
        "## Why traces went (first failing stage)",
        "",
        "| reason | traces | example (problem_id, sample) |",
        "|---|---:|---|",
    ]
    for reason, n in stats["drop_reasons"].items():
        ex = (
            rows.lazy()
            .filter(pl.col("reason") == reason)
            .select("problem_id", "sample_idx")
            .first()
            .collect()
        )
        ex = ex.row(0, named=True)
        lines.append(f"| {reason} | {n} | {ex['problem_id']}, {ex['sample_idx']} |")
    lines += [
        "",
        "Every dropped trace and its reason: dropped.parquet.",
        "",
        "## Quality filters, each on its own",
        "",
        "| filter | all traces | correct traces |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {k} | {v} | {stats['filters']['correct_traces'][k]} |"
        for k, v in stats["filters"]["all_traces"].items()
    ]
    p, v, o = stats["problems"], stats["verification"], stats["outputs"]
    lines += [
        "",
        "## Arithmetic steps (cotgen/verify/steps.py)"
        + (" (--require-work: a trace needs a right step and no wrong one)" if cfg.require_work else ""),
        "",
        "| traces | n | with a wrong step | no checked step | work ok | steps right / wrong / unchecked |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, w in stats["work"].items():
        lines.append(f"| {name} | {w['traces']} | {w['with_wrong_step']} | {w['without_checked_step']} | "
                     f"{w['work_ok']} | {w['steps']['right']} / {w['steps']['wrong']} / {w['steps']['unchecked']} |")
    lines += [
        "",
        "## Verification",
        "",
        f"- extraction: {stats['extraction']} (last-number fallbacks: {stats['fallback_answers']})",
        f"- status: {v['status']}",
        (
            f"- decided by: {v['path']} "
            f"({v['symbolic_unique_pairs']} unique pairs went to the sandboxed symbolic path)"
        ),
        f"- skipped before the funnel: {stats['skipped']}",
        *([f"- problems trained on their reference solution (--reference-fallback): {stats['reference_fallback']}"]
          if stats.get("reference_fallback") else []),
        "",
        "## Problems",
        "",
        f"- seen {p['seen']}, with kept traces {p['with_kept']}, gold unparsable {p['bad_gold']}",
        (
            f"- always solved {p['always_solved']}, never solved {p['never_solved']}, mean pass rate "
            f"{p['mean_pass_rate'] if p['mean_pass_rate'] is None else round(p['mean_pass_rate'], 3)}"
        ),
        f"- contaminated: {p['contaminated'] or 'none'} (checked against: {cfg.decontaminate or 'nothing'})",
        "",
        "## Output",
        "",
        f"- train.parquet: {o['train_rows']} traces, {o['train_problems']} problems",
        f"- validation.parquet: {o['validation_rows']} traces, {o['validation_problems']} problems",
        f"- up to {cfg.max_per_problem} per problem, selection `{cfg.select}`",
        f"- {stats['seconds']} s, {stats['traces_per_s']} traces/s, peak RSS {stats['peak_rss_mb']} MB",
        "",
        "![funnel](funnel.png) ![pass rates](pass_rates.png)",
        "",
    ]
    return "\n".join(lines)


def _plots(stage: Path, stats: dict, rates: pl.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, values = list(stats["funnel"]), list(stats["funnel"].values())
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(names[::-1], values[::-1], color="tab:blue")
    for y, v in enumerate(values[::-1]):
        ax.text(v, y, f" {v}", va="center", fontsize=8)
    ax.set_xlabel("traces")
    ax.set_title("cotgen filter funnel")
    fig.tight_layout()
    with atomic_path(stage / "funnel.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(rates["pass_rate"].drop_nulls().to_list(), bins=20, range=(0, 1), color="tab:green")
    ax.set_xlabel("pass rate (correct / samples)")
    ax.set_ylabel("problems")
    ax.set_title("per-problem pass rate")
    fig.tight_layout()
    with atomic_path(stage / "pass_rates.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write(stage: Path, stats: dict, rows: pl.DataFrame, rates: pl.DataFrame, cfg) -> None:
    write_text(stage / "stats.json", json.dumps(stats, indent=2) + "\n")
    write_text(stage / "summary.md", _summary(stats, rows, cfg))
    _plots(stage, stats, rates)
