"""Inputs of `cotgen filter`: the traces folder (checked shard by shard, read in batches) and the problems.

Traces: every `*.parquet` in the folder, in name order, as `cotgen generate` writes them (TRACE_SCHEMA); the
filter needs TRACE_COLUMNS and carries `teacher`, `seed`, `error` when present. Rows whose `error` is set or
whose finish_reason is "error" are generation failures: skipped and counted. A bad file or value raises
InputError naming the file, the row (1-based) and the field, before any output is written; so does a file
whose data is damaged past its footer (found only when its batch is read, after earlier batches were scored).

Problems (question and gold answer per problem_id), first that applies:
1. `--problems FILE.parquet` (PROBLEM_SCHEMA, as `cotgen problems SOURCE --out FILE.parquet` writes it);
2. `source`/`split` (and `data_dir`, `limit`, `source_seed`) given in the filter's config or flags;
3. the traces folder's `config.toml` (or `config-*.toml`) keys `source`, `split`, `data_dir`, `limit`, `seed`;
4. the traces' own `source` and `split` columns, when they hold one value each.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from cotgen.errors import CotgenError, InputError
from cotgen.io import collect_parquet, read_parquet, read_parquet_schema
from cotgen.schemas import PROBLEM_SCHEMA, check_schema

TRACE_COLUMNS = {
    "problem_id": pl.String,
    "sample_idx": pl.Int64,
    "completion": pl.String,
    "finish_reason": pl.String,
    "completion_tokens": pl.Int64,
}
OPTIONAL_COLUMNS = {
    "teacher": pl.String,
    "seed": pl.Int64,
    "error": pl.String,
    "source": pl.String,
    "split": pl.String,
    "prompt": pl.String,  # the teacher's prompt, carried to the dataset as teacher_prompt
}
FINISH_REASONS = ("stop", "length", "error")


def trace_files(folder: Path) -> list[Path]:
    """The folder's Parquet files, each checked for the columns the filter reads."""
    if not folder.is_dir():
        raise InputError(folder, "traces folder not found")
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise InputError(folder, "holds no *.parquet traces")
    for path in files:
        schema = read_parquet_schema(path)
        for name, dtype in TRACE_COLUMNS.items():
            if name not in schema:
                raise InputError(path, "column is missing", field=name)
            ok = schema[name].is_integer() if dtype == pl.Int64 else schema[name] == dtype
            if not ok:
                raise InputError(path, f"has type {schema[name]}, expected {dtype}", field=name)
    return files


def _columns(path: Path) -> list[pl.Expr]:
    schema = read_parquet_schema(path)
    cols = [pl.col(n).cast(t) for n, t in TRACE_COLUMNS.items()]
    for name, dtype in OPTIONAL_COLUMNS.items():
        cols.append(
            pl.col(name).cast(dtype, strict=False) if name in schema else pl.lit(None, dtype).alias(name)
        )
    return cols


def _check_batch(df: pl.DataFrame, path: Path) -> None:
    for name in TRACE_COLUMNS:
        bad = df.filter(pl.col(name).is_null() & pl.col("error").is_null())
        if bad.height:
            raise InputError(path, f"row {bad['_row'][0] + 1}: is null", field=name)
    bad = df.filter(~pl.col("finish_reason").is_in(FINISH_REASONS))
    if bad.height:
        raise InputError(
            path,
            f"row {bad['_row'][0] + 1}: {bad['finish_reason'][0]!r} is not one of "
            f"{', '.join(FINISH_REASONS)}",
            field="finish_reason",
        )
    bad = df.filter(pl.col("completion_tokens") < 0)
    if bad.height:
        raise InputError(path, f"row {bad['_row'][0] + 1}: is negative", field="completion_tokens")


def iter_batches(path: Path, rows: int) -> Iterator[pl.DataFrame]:
    """Checked batches of one file with `_row` (0-based row in the file) added."""
    lf = pl.scan_parquet(path).select(_columns(path)).with_row_index("_row")
    total = collect_parquet(path, pl.scan_parquet(path).select(pl.len())).item()
    for start in range(0, total, rows):
        df = collect_parquet(path, lf.slice(start, rows), what=f"rows {start + 1}-{min(start + rows, total)}: ")
        _check_batch(df, path)
        yield df


def read_rows(path: Path, rows: pl.Series, columns: list[str]) -> pl.DataFrame:
    """`columns` of the given 0-based rows of one file, with `_row`."""
    lf = pl.scan_parquet(path).select(_columns(path)).with_row_index("_row")
    return collect_parquet(path, lf.filter(pl.col("_row").is_in(rows.implode())).select("_row", *columns))


def traces_config(folder: Path) -> dict:
    """source/split/data_dir/limit/seed from the traces folder's config.toml (or config-*.toml), if any."""
    paths = (
        [folder / "config.toml"]
        if (folder / "config.toml").is_file()
        else sorted(folder.glob("config-*.toml"))
    )
    if not paths:
        return {}
    from cotgen.io import read_text

    try:
        data = tomllib.loads(read_text(paths[0]))
    except tomllib.TOMLDecodeError as err:
        raise InputError(paths[0], f"not valid TOML: {err}") from None
    return {k: data[k] for k in ("source", "split", "data_dir", "limit", "seed") if k in data}


def _single(files: list[Path], column: str) -> str | None:
    values = set()
    for path in files:
        if column in read_parquet_schema(path):
            unique = collect_parquet(path, pl.scan_parquet(path).select(pl.col(column).unique()))
            values |= set(unique[column].drop_nulls())
    return values.pop() if len(values) == 1 else None


def load_problems(
    problems: Path | None,
    source: str | None,
    split: str | None,
    data_dir: Path | None,
    limit: int | None,
    seed: int | None,
    traces: Path,
    files: list[Path],
) -> tuple[pl.DataFrame, dict]:
    """(problems frame: id, source, question, gold; where they came from) following the module docstring."""
    if problems is not None:
        raw = read_parquet(problems, missing="problems file not found")
        df, origin = check_schema(raw, PROBLEM_SCHEMA, str(problems)), {"problems": str(problems)}
    else:
        recorded = traces_config(traces) if source is None else {}
        source = source or recorded.get("source") or _single(files, "source")
        split = split or recorded.get("split") or _single(files, "split") or "train"
        if source is None:
            raise CotgenError(
                f"cannot tell which problems the traces in {traces} answer: it has no config.toml "
                "naming source and split; pass --problems FILE.parquet (cotgen problems SOURCE "
                "--out FILE.parquet)"
            )
        data_dir = data_dir or recorded.get("data_dir")
        limit = limit if limit is not None else recorded.get("limit")
        seed = seed if seed is not None else recorded.get("seed", 0)
        from cotgen.sources import load_problems as load

        df = load(source, split, data_dir=data_dir, limit=limit, seed=seed)
        origin = {
            "source": source,
            "split": split,
            "limit": limit,
            "source_seed": seed,
            "data_dir": str(data_dir) if data_dir else None,
        }
    if problems is not None:  # sources.load_problems refuses repeated questions (so ids) itself
        rows = df.select(pl.int_range(pl.len()).alias("row"), "id").filter(pl.col("id").is_duplicated())
        if rows.height:
            first, row = rows.with_columns(pl.col("row").min().over("id").alias("first")).filter(
                pl.col("row") != pl.col("first")).select("first", "row").row(0)
            raise InputError(problems, f"row {row + 1}: repeats the problem id of row {first + 1} "
                                       "(ids must be unique)", field="id")
    return df.select("id", "source", "question", pl.col("answer").alias("gold"), "solution"), origin
