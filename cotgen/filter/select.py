"""Dedup, decontamination and selection over the per-trace decisions; per-problem pass rates.

Input: one row per trace with `reason` (null for traces that are parsed, correct and pass every quality
filter), `problem_id`, `sample_idx`, `_file`, `_row`, `completion_tokens`, `text_hash` and `contaminated_by`
(null unless the problem overlaps an evaluation set); the candidates' sketches come in a separate frame, so
the big table carries none. Steps, in funnel order:

1. exact duplicates (same problem, same `text_hash`): all but the preferred copy -> "duplicate";
2. near duplicates and selection, per problem, in Python over the survivors only. `shortest`: candidates in
   order of (completion_tokens, sample_idx); `diverse`: farthest-first, starting from the shortest, each next
   pick the candidate least similar (max Jaccard) to those kept, ties to the shorter. A candidate whose
   estimated Jaccard with a kept trace is >= `near_dup` -> "near_duplicate"; otherwise it is kept, or, once K
   are kept, -> "over_limit". Traces of contaminated problems that survive dedup -> "contaminated".

Pass rates per problem: n_samples, n_parsed, n_correct, pass_rate = n_correct / n_samples (null when the gold
could not be parsed), n_kept. RL uses them to drop problems that are always or never solved.
"""

from __future__ import annotations

import polars as pl

from cotgen.filter.config import SELECT_MODES
from cotgen.filter.dedup import SKETCH, jaccard


def _pick(rows: list[tuple], k: int, near_dup: float, mode: str, contaminated: bool) -> dict[int, str | None]:
    """{row id: None (kept) or reason} for one problem's candidates, `rows` = (id, tokens, idx, sketch)."""
    rows = sorted(rows, key=lambda r: (r[1], r[2]))
    sketches = {r[0]: list(r[3] or []) for r in rows}
    kept: list[int] = []
    out: dict[int, str | None] = {}
    sim = {r[0]: 0.0 for r in rows}  # max Jaccard to the kept traces so far
    remaining = [r[0] for r in rows]
    while remaining:
        if mode == "diverse":
            rid = min(remaining, key=lambda i: (sim[i] >= near_dup, sim[i], remaining.index(i)))
        else:
            rid = remaining[0]
        remaining.remove(rid)
        if sim[rid] >= near_dup:
            out[rid] = "near_duplicate"
            continue
        if contaminated:
            out[rid] = "contaminated"
        elif len(kept) >= k:
            out[rid] = "over_limit"
            continue
        else:
            out[rid] = None
        kept.append(rid)
        for other in remaining:
            sim[other] = max(sim[other], jaccard(sketches[rid], sketches[other], SKETCH))
    return out


def select(
    df: pl.DataFrame,
    sketches: pl.LazyFrame,
    *,
    k: int,
    mode: str = "shortest",
    near_dup: float = 0.8,
    bucket_rows: int = 100_000,
) -> pl.DataFrame:
    """`df` with `reason` updated (duplicate, near_duplicate, contaminated, over_limit) and `kept` added.

    `sketches` (lazy: `_file`, `_row`, `sketch`) is read one bucket of problems at a time, about `bucket_rows`
    candidates each, so only a bucket's sketches are ever in memory."""
    if mode not in SELECT_MODES:
        raise ValueError(f"unknown selection {mode!r}; known: {', '.join(SELECT_MODES)}")
    df = df.with_row_index("_id")
    cols = [
        "_id",
        "problem_id",
        "completion_tokens",
        "sample_idx",
        "text_hash",
        "_file",
        "_row",
        "contaminated_by",
    ]
    cand = (
        df.filter(pl.col("reason").is_null())
        .select(cols)
        .sort("problem_id", "completion_tokens", "sample_idx")
    )
    first = cand.select(pl.struct("problem_id", "text_hash").is_first_distinct()).to_series()
    decided: dict[int, str | None] = dict.fromkeys(cand.filter(~first)["_id"].to_list(), "duplicate")
    cand = cand.filter(first)
    buckets = max(1, cand.height // bucket_rows)
    cand = cand.with_columns((pl.col("problem_id").hash(11) % buckets).alias("_bucket"))
    for b in range(buckets):
        part = cand.filter(pl.col("_bucket") == b)
        keys = part.select("_file", "_row").lazy()
        part = part.join(
            sketches.join(keys, on=["_file", "_row"]).collect(),
            on=["_file", "_row"],
            how="left",
            maintain_order="left",
        )
        group: list[tuple] = []
        current, dirty = None, False
        rows = part.select(
            "_id", "completion_tokens", "sample_idx", "sketch", "problem_id", "contaminated_by"
        )
        for rid, tokens, idx, sketch, pid, cont in rows.iter_rows():
            if pid != current and group:
                decided.update(_pick(group, k, near_dup, mode, dirty))
                group = []
            current, dirty = pid, cont is not None
            group.append((rid, tokens, idx, sketch))
        if group:
            decided.update(_pick(group, k, near_dup, mode, dirty))
    upd = pl.DataFrame(
        {"_id": list(decided), "_reason": list(decided.values())},
        schema={"_id": pl.UInt32, "_reason": pl.String},
    )
    df = df.join(upd, on="_id", how="left", maintain_order="left")
    candidate = pl.col("reason").is_null()
    return df.with_columns(
        reason=pl.when(candidate).then(pl.col("_reason")).otherwise(pl.col("reason")),
        kept=candidate & pl.col("_reason").is_null(),
    ).drop("_id", "_reason")


def pass_rates(df: pl.DataFrame) -> pl.DataFrame:
    """One row per problem: source, n_samples, n_parsed, n_correct, pass_rate, n_kept, contaminated_by."""
    return (
        df.group_by("problem_id", maintain_order=True)
        .agg(
            pl.col("source").first(),
            pl.len().cast(pl.Int64).alias("n_samples"),
            (pl.col("method") != "none").sum().cast(pl.Int64).alias("n_parsed"),
            pl.col("correct").sum().cast(pl.Int64).alias("n_correct"),
            (pl.col("status") == "bad_gold").any().alias("_bad"),
            pl.col("kept").sum().cast(pl.Int64).alias("n_kept"),
            pl.col("contaminated_by").first(),
        )
        .with_columns(pass_rate=pl.when(~pl.col("_bad")).then(pl.col("n_correct") / pl.col("n_samples")))
        .select(
            "problem_id",
            "source",
            "n_samples",
            "n_parsed",
            "n_correct",
            "pass_rate",
            "n_kept",
            "contaminated_by",
        )
    )
