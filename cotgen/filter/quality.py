"""Quality filters on traces, each a Boolean column (True = fails) so that each can be counted on its own.

- `truncated`: finish_reason == "length".
- `format`: the completion does not match `cotgen.prompts.STUDENT_FORMAT_RE` (each tag exactly once, reasoning
  then answer, neither blank, nothing outside them). The regex's groups give `reasoning` and `tag_answer`.
  With `repair_format`, a trace that only lacks `</reasoning>` (`UNCLOSED_REASONING_RE`) passes, marked
  `format_repaired`: its SFT target is rebuilt from the groups anyway.
- `length`: completion_tokens outside [min_tokens, max_tokens].
- `repetition`: the share of repeated word 5-grams (`1 - distinct/total`, tokens = words and single symbols,
  lower-cased) is above max_repeat_frac once there are at least MIN_SHINGLES of them, or one line of at least
  10 characters occurs max_line_repeats times or more (a loop). Measured here: human solutions stay below 0.7
  (GSM8K train max 0.32; MATH test 99th percentile 0.40, max 0.68 on LaTeX-dense algebra), while the looping
  Gemma 3 270M traces in runs/demo score 0.77-0.80; hence the default 0.7.
- `garbage`: the share of characters that are not letters, digits, whitespace, punctuation or math/currency/
  modifier symbols (control characters, U+FFFD, private-use, emoji and other "So" symbols) is above
  max_garbage_frac.

`shingles` (UInt64 hashes of the word 5-grams) are computed here once and reused by `dedup.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from cotgen.verify.student_format import add_format

FILTERS = ("truncated", "format", "length", "repetition", "garbage")
SHINGLE = 5
MIN_SHINGLES = 20
_BASE = 0x100000001B3  # odd multiplier of the rolling n-gram hash
_TOKEN = r"[\p{L}\p{N}_]+|[^\s\p{L}\p{N}_]"
_GARBAGE = r"[^\p{L}\p{N}\p{Z}\s\p{P}\p{Sm}\p{Sc}\p{Sk}]|\x{FFFD}"


@dataclass(frozen=True)
class QualityLimits:
    min_tokens: int = 8
    max_tokens: int = 2048
    max_repeat_frac: float = 0.7
    max_line_repeats: int = 4
    max_garbage_frac: float = 0.05
    repair_format: bool = False


def shingle_expr(text: str = "completion", n: int = SHINGLE, seed: int = 0) -> pl.Expr:
    """List[UInt64]: hashes of the word n-grams of `text` (all of them, in order, repeats kept)."""
    tokens = pl.col(text).str.to_lowercase().str.extract_all(_TOKEN).list.eval(pl.element().hash(seed))
    # polynomial rolling hash of n token hashes, wrapping mod 2^64 (Polars' UInt64 arithmetic wraps)
    gram = pl.sum_horizontal(
        [pl.element().shift(-i) * pl.lit(pow(_BASE, n - 1 - i, 2**64), pl.UInt64) for i in range(n)]
    )
    last = pl.element().shift(-(n - 1))
    return tokens.list.eval(pl.when(last.is_not_null()).then(gram).drop_nulls())


def add_quality(df: pl.DataFrame, limits: QualityLimits, text: str = "completion") -> pl.DataFrame:
    """Add the FILTERS columns (Boolean, True = fails), `repeat_frac`, `garbage_frac`, `reasoning`,
    `tag_answer` and `shingles`. Needs `text`, `finish_reason` and `completion_tokens`."""
    df = add_format(df, text, repair=limits.repair_format).with_columns(shingle_expr(text).alias("shingles"))
    n = pl.col("shingles").list.len()
    lines = (
        pl.col(text)
        .str.split("\n")
        .list.eval(pl.element().str.strip_chars().filter(pl.element().str.len_chars() >= 10))
    )
    df = df.with_columns(
        pl.when(n > 0).then(1.0 - pl.col("shingles").list.n_unique() / n).otherwise(0.0).alias("repeat_frac"),
        (n >= MIN_SHINGLES).alias("_enough"),
        lines.list.eval(pl.element().unique_counts().max()).list.first().fill_null(0).alias("_line_max"),
        (pl.col(text).str.count_matches(_GARBAGE) / pl.col(text).str.len_chars().clip(1))
        .fill_null(0.0)
        .alias("garbage_frac"),
    )
    tokens = pl.col("completion_tokens")
    return df.with_columns(
        truncated=pl.col("finish_reason") == "length",
        format=pl.col("reasoning").is_null(),
        length=(tokens < limits.min_tokens) | (tokens > limits.max_tokens),
        repetition=(pl.col("_enough") & (pl.col("repeat_frac") > limits.max_repeat_frac))
        | (pl.col("_line_max") >= limits.max_line_repeats),
        garbage=pl.col("garbage_frac") > limits.max_garbage_frac,
    ).drop("_enough", "_line_max")
