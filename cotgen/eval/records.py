"""Scored samples: backend samples plus the filter stage's extraction and verdict, one row per sample.

Every answer is read and judged by `cotgen.filter` through `cotgen.eval.adapters` (the same ladder and verifier as
training data and RL rewards: no second extraction path). Format compliance is the filter's format check
(`cotgen.prompts.STUDENT_FORMAT_RE` on the whole completion, the format both the student prompt and the few-shot
exemplars ask for). `vote` is the key maj@k counts (`adapters.add_vote`); null when unparsed.

A sample the backend failed on (finish_reason "error") is kept with its error and scored as wrong.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cotgen.eval import adapters
from cotgen.io import read_parquet
from cotgen.schemas import check_schema

SAMPLE_SCHEMA = pl.Schema(
    {
        "problem_id": pl.String,
        "pass": pl.String,  # greedy | sampled
        "sample_idx": pl.Int64,
        "source": pl.String,
        "split": pl.String,
        "metadata": pl.String,  # the problem's metadata JSON (MATH: level, subject)
        "gold": pl.String,
        "completion": pl.String,
        "finish_reason": pl.String,  # stop | length | error
        "prompt_tokens": pl.Int64,
        "completion_tokens": pl.Int64,
        "temperature": pl.Float64,
        "seed": pl.Int64,
        "error": pl.String,
        "extracted": pl.String,  # null: unparsed
        "method": pl.String,  # the extraction rule that matched (cotgen.verify.extract.METHODS)
        "vote": pl.String,  # maj@k voting key; null: unparsed
        "correct": pl.Boolean,
        "status": pl.String,  # the verifier's (cotgen.verify.verifier.STATUSES); "sample_error": sampling failed
        "path": pl.String,  # numeric | symbolic: which path of the verifier decided
        "format_ok": pl.Boolean,
        # the reasoning's arithmetic claims (cotgen.verify.steps); work_ok: a right step and no wrong one
        "steps_right": pl.Int32,
        "steps_wrong": pl.Int32,
        "steps_unchecked": pl.Int32,
        "work_ok": pl.Boolean,
    }
)
WORK = ("steps_right", "steps_wrong", "steps_unchecked", "work_ok")


def scored(samples: list, pass_name: str, temperature: float, problems: pl.DataFrame) -> pl.DataFrame:
    """Backend `Sample`s of one pass -> SAMPLE_SCHEMA rows (extracted, judged, format-checked)."""
    return score(frame(samples, pass_name, temperature, problems))


def frame(samples: list, pass_name: str, temperature: float, problems: pl.DataFrame) -> pl.DataFrame:
    """Backend `Sample`s of one pass joined to their problems, not yet scored."""
    raw = pl.DataFrame(
        {
            "problem_id": [s.problem_id for s in samples],
            "sample_idx": [s.sample_idx for s in samples],
            "completion": [s.completion for s in samples],
            "finish_reason": [s.finish_reason for s in samples],
            "prompt_tokens": [s.prompt_tokens for s in samples],
            "completion_tokens": [s.completion_tokens for s in samples],
            "seed": [s.seed for s in samples],
            "error": [s.error for s in samples],
        },
        schema={"problem_id": pl.String, "sample_idx": pl.Int64, "completion": pl.String,
                "finish_reason": pl.String, "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64,
                "seed": pl.Int64, "error": pl.String},
    )
    info = problems.select(pl.col("id").alias("problem_id"), "source", "split", "metadata",
                           pl.col("answer").alias("gold"))
    return raw.join(info, on="problem_id", how="left", maintain_order="left").with_columns(
        pl.lit(pass_name).alias("pass"), pl.lit(float(temperature)).alias("temperature"))


def score(df: pl.DataFrame) -> pl.DataFrame:
    """Add extracted, method, vote, correct, status, path and format_ok to a frame with completion, gold, error
    and finish_reason columns."""
    df = adapters.judge(df)
    failed = pl.col("error").is_not_null() | (pl.col("finish_reason") == "error")
    df = df.with_columns(
        correct=pl.col("correct").fill_null(False) & ~failed,
        format_ok=pl.col("format_ok") & ~failed,
        work_ok=pl.col("work_ok") & ~failed,
        status=pl.when(failed).then(pl.lit("sample_error")).otherwise(pl.col("status")),
    )
    return check_schema(df, SAMPLE_SCHEMA, "eval samples")


def read_samples(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    df = read_parquet(path, missing="file not found (is this the --out folder of a `cotgen eval` run?)")
    if not set(WORK) & set(df.columns) and "completion" in df.columns:
        df = adapters.add_work(df)  # a run from before steps were checked: read its text now
    return check_schema(df, SAMPLE_SCHEMA, str(path))
