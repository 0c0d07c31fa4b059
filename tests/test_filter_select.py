"""Selection on its own: exact and near duplicates, K per problem, contamination, and the same answer whether
the candidates' sketches are read in one bucket or many."""

from __future__ import annotations

import random

import polars as pl

from cotgen.filter.dedup import jaccard, sketch_expr
from cotgen.filter.quality import shingle_expr
from cotgen.filter.select import select

BASE = " ".join(f"word{i}" for i in range(60))


def frame(texts: dict[str, list[str]], contaminated=()) -> tuple[pl.DataFrame, pl.LazyFrame]:
    rows = [
        {"problem_id": pid, "sample_idx": i, "completion": t, "completion_tokens": len(t.split())}
        for pid, ts in texts.items()
        for i, t in enumerate(ts)
    ]
    df = pl.DataFrame(rows).with_columns(
        pl.lit(0, pl.Int32).alias("_file"),
        pl.int_range(len(rows), dtype=pl.UInt32).alias("_row"),
        pl.col("completion").hash(1).alias("text_hash"),
        pl.lit(None, pl.String).alias("reason"),
        pl.when(pl.col("problem_id").is_in(list(contaminated)))
        .then(pl.lit("eval:test"))
        .alias("contaminated_by"),
    )
    sketches = df.with_columns(shingle_expr().alias("shingles")).select(
        "_file", "_row", sketch_expr().alias("sketch")
    )
    return df.drop("completion"), sketches.lazy()


def reasons(out: pl.DataFrame) -> dict[tuple[str, int], str | None]:
    return {(r["problem_id"], r["sample_idx"]): r["reason"] for r in out.iter_rows(named=True)}


def test_duplicates_limit_and_contamination():
    texts = {
        "a": [
            BASE,  # 60 tokens
            BASE,  # exact copy
            BASE.replace("word30", "other"),  # one word changed: Jaccard ~0.85
            "a quite different way to write the solution " * 2,  # 16 tokens: the shortest
            "yet another different text that is longer than the short one " * 2,  # 22 tokens
        ],
        "b": ["short one"],
        "c": ["eval copy of a problem"],
    }
    df, sketches = frame(texts, contaminated={"c"})
    out = select(df, sketches, k=3, near_dup=0.8)
    assert reasons(out) == {
        ("a", 0): None,  # kept third (60 tokens), after the 16- and 22-token ones
        ("a", 1): "duplicate",
        ("a", 2): "near_duplicate",  # of a0
        ("a", 3): None,
        ("a", 4): None,
        ("b", 0): None,
        ("c", 0): "contaminated",
    }
    assert out["kept"].to_list() == [r is None for r in out["reason"]]
    two = reasons(select(df, sketches, k=2, near_dup=0.8))
    assert two[("a", 0)] == "over_limit"
    assert two[("a", 2)] == "over_limit"  # compared with kept traces only; a0 was not kept


def test_buckets_do_not_change_the_answer():
    texts = {
        f"p{i}": [f"{BASE} {j % 3} {i}" for j in range(6)] + [f"solo text number {i} {j}" for j in range(3)]
        for i in range(12)
    }
    df, sketches = frame(texts)
    one = select(df, sketches, k=3, near_dup=0.8)
    many = select(df, sketches, k=3, near_dup=0.8, bucket_rows=5)
    assert one.equals(many)
    assert one["kept"].sum() == 12 * 3


def test_jaccard_estimate():
    rng = random.Random(0)
    pool = rng.sample(range(2**32), 3000)
    a, b = set(pool[:2000]), set(pool[1000:])  # true Jaccard 1000 / 3000
    sketch = lambda s: sorted(s)[:64]  # noqa: E731
    assert abs(jaccard(sketch(a), sketch(b)) - 1 / 3) < 0.15
    assert jaccard([1, 2], [1, 2]) == 1.0 and jaccard([1], []) == 0.0 and jaccard([], []) == 1.0
