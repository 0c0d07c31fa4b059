"""Table schemas, declared once. Every stage boundary is a Parquet file checked against one of these."""

from __future__ import annotations

import polars as pl

from cotgen.errors import InputError

# One row per problem, whatever the source. `id` is a stable hash of source and question;
# `answer` is the normalised gold answer; `metadata` is a JSON object (level, subject, ...).
PROBLEM_SCHEMA = pl.Schema(
    {
        "id": pl.String,
        "source": pl.String,
        "split": pl.String,
        "question": pl.String,
        "answer": pl.String,
        "solution": pl.String,
        "metadata": pl.String,
    }
)


def check_schema(df: pl.DataFrame, schema: pl.Schema, path: str) -> pl.DataFrame:
    """Return `df` with columns in schema order; raise InputError naming the first missing or mistyped column."""
    for name, dtype in schema.items():
        if name not in df.columns:
            raise InputError(path, "column is missing", field=name)
        if df.schema[name] != dtype:
            raise InputError(path, f"has type {df.schema[name]}, expected {dtype}", field=name)
    return df.select(list(schema.names()))
