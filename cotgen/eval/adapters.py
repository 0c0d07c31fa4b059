"""The only place eval touches the filter stage: extraction, verdict, format check and the maj@k voting key.

- `judge(df)`: `cotgen.verify.verifier.Verifier.score_completions` on (`completion`, `gold`): the filter's
  extraction ladder and its verifier in one call, the same path training data and RL rewards take. Adds
  `extracted`, `method`, `correct`, `status` (filter's STATUSES) and `path` (numeric | symbolic).
- `format_ok`: `cotgen.verify.student_format.add_format` matched (`cotgen.prompts.STUDENT_FORMAT_RE`).
- `add_work(df)`: the arithmetic steps of the reasoning (`cotgen.verify.steps`; the `<reasoning>` block where
  there is one, else the whole completion): counts by verdict and `work_ok` (a right step, no wrong one).
- `add_vote(df)`: the voting key of `extracted`, from the filter's own normalisation (`numeric.clean`, then
  `numeric.add_number`): a number that path understands votes as its value (a plain integer as its canonical
  digits, any other rational as its float value, a percent keeps its `%`), so "1,000", "1000." and "$1000" are one
  vote and "0.5" and "\\frac{1}{2}" are one vote; any other answer votes as its cleaned text without whitespace.
  Symbolically equal non-numeric answers written differently (`\\sqrt{3}/2` vs `\\frac{\\sqrt3}{2}`) vote
  separately: a known limit (clustering by the verifier would cost k^2 symbolic checks per problem).
"""

from __future__ import annotations

import polars as pl

from cotgen.verify import numeric
from cotgen.verify.student_format import add_format, work_text
from cotgen.verify.verifier import Verifier

VERIFIER = ("cotgen.verify.verifier.Verifier.score_completions: numeric path (Polars, exact rationals) first, "
            "then math-verify in sandboxed workers; timeout/rejected/error/bad_gold never correct")


def judge(df: pl.DataFrame) -> pl.DataFrame:
    """`df` (completion, gold) with extracted, method, correct, status, path, format_ok and vote added."""
    with Verifier() as verifier:
        scored = verifier.score_completions(df["completion"].to_list(), df["gold"].to_list())
    verdicts = scored.select(pl.col("answer").alias("extracted"), "method", "correct", "status", "path")
    df = df.with_columns(verdicts)
    formatted = add_format(df.select("completion"))
    df = df.with_columns(format_ok=formatted["reasoning"].is_not_null())
    return add_work(add_vote(df))


def add_work(df: pl.DataFrame) -> pl.DataFrame:
    """Step counts and `work_ok` of each completion's `student_format.work_text` (the rl step reward's text)."""
    from cotgen.verify.steps import WORK_COLUMNS, work_ok_expr
    from cotgen.verify.steps import add_work as steps_of

    text = pl.Series("_work_text", [work_text(c) for c in df["completion"]], dtype=pl.String)
    out = steps_of(df.with_columns(text), "_work_text").drop("_work_text", "bad_work")
    return out.with_columns(work_ok=work_ok_expr(),
                            *(pl.col(c).cast(pl.Int32) for c in WORK_COLUMNS))


def add_vote(df: pl.DataFrame, src: str = "extracted") -> pl.DataFrame:
    work = df.select(numeric.clean(pl.col(src)).alias("_v"))
    work = numeric.add_number(work, "_v", "_n")
    num, den, pct, integer = (pl.col(f"_n_{k}") for k in ("num", "den", "pct", "int"))
    value = (num.cast(pl.Float64) / den.cast(pl.Float64)).cast(pl.String)  # equal rationals, equal floats
    rational = pl.when(num.is_not_null() & den.is_not_null()).then(
        value + pl.when(pct).then(pl.lit("%")).otherwise(pl.lit("")))
    key = pl.coalesce(integer, rational, pl.col("_v").str.replace_all(r"\s+", ""))
    return df.with_columns(work.select(pl.when(key.str.len_chars() > 0).then(key).alias("vote")))
