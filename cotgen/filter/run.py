"""`cotgen filter`: raw traces -> verified, curated SFT data. `run(cfg)` is the whole stage.

1. Check every trace file and load the problems (`inputs.py`); collect evaluation n-grams (`dedup.py`).
2. Score the traces batch by batch (`batch_rows` at a time, bounded memory): extraction (`cotgen.verify.extract`),
   verification against the gold (`cotgen.verify.verifier`), quality filters (`quality.py`), fingerprints (`dedup.py`).
   Only a slim row per trace (no text) is kept, in a scratch folder.
3. Give each trace the first reason it goes, in funnel order: bad_gold, unparsed, wrong | unverified, the
   quality filters, duplicate | near_duplicate, contaminated, over_limit (`select.py`); the rest are kept.
4. Read the kept traces' text back and build SFT records: `prompt` = `student_prompt(question)`,
   `completion` = `student_target(reasoning, answer)`; split by problem into train/validation.
5. Write everything into a temporary folder beside --out (each file fsynced), then rename it into place
   (`report.py` writes the stats and the summary): no half-written output, whatever fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import resource
import shutil
import time
from pathlib import Path

import polars as pl

from cotgen.config import write_resolved
from cotgen.errors import CotgenError, InputError
from cotgen.filter import dedup, inputs, report
from cotgen.filter.config import FilterConfig
from cotgen.filter.quality import FILTERS, QualityLimits, add_format, add_quality
from cotgen.filter.select import pass_rates, select
from cotgen.io import cannot_write, fsync, temporary_beside, write_parquet
from cotgen.schemas import PASS_RATE_SCHEMA, SFT_SCHEMA
from cotgen.verify.extract import extract_frame
from cotgen.verify.steps import WORK_COLUMNS, add_work, check_work
from cotgen.verify.verifier import Verifier

log = logging.getLogger(__name__)

SLIM = [
    "problem_id",
    "sample_idx",
    "_file",
    "_row",
    "source",
    "method",
    "answer",
    "fallback",
    "status",
    "path",
    "correct",
    *FILTERS,
    "format_repaired",
    "completion_tokens",
    *WORK_COLUMNS,
    "bad_work",
    "repeat_frac",
    "garbage_frac",
    "text_hash",
    "sketch",
    "contaminated_by",
]


def _reason() -> pl.Expr:
    r = (
        pl.when(pl.col("status") == "bad_gold")
        .then(pl.lit("bad_gold"))
        .when((pl.col("method") == "none") | (pl.col("status") == "no_answer"))
        .then(pl.lit("unparsed"))
        .when(pl.col("status") == "wrong")
        .then(pl.lit("wrong"))
        .when(pl.col("status") != "correct")
        .then(pl.lit("unverified"))
    )
    for name in FILTERS:
        r = r.when(pl.col(name)).then(pl.lit(name))
    r = r.when(pl.col("bad_work")).then(pl.lit("bad_work"))
    return r.otherwise(pl.lit(None, pl.String)).alias("reason")


def _score(
    batch: pl.DataFrame,
    index: int,
    path: Path,
    problems: pl.DataFrame,
    verifier: Verifier,
    limits: QualityLimits,
    require_work: bool = False,
) -> pl.DataFrame:
    """Slim scored rows of one batch of finished traces. With `require_work` the arithmetic steps
    (`cotgen.verify.steps`) are checked here, on the traces still in the running (correct, through the quality
    filters), in their reasoning (the whole text if the format failed); without it only the kept traces are
    checked, when their records are built (the checker is ~30x slower than the answer verifier)."""
    df = batch.join(
        problems, left_on="problem_id", right_on="id", how="left", maintain_order="left", suffix="_problem"
    )
    unknown = df.filter(pl.col("question").is_null())
    if unknown.height:
        raise InputError(
            path,
            f"row {unknown['_row'][0] + 1}: problem {unknown['problem_id'][0]!r} is not among "
            f"the problems (pass --problems or check the source)",
            field="problem_id",
        )
    df = df.with_columns(pl.col("source_problem").alias("source"), pl.lit(index, pl.Int32).alias("_file"))
    df = verifier.verify_frame(extract_frame(df), "answer", "gold")
    df = add_quality(df, limits)
    df = add_work(df.with_columns(pl.coalesce("reasoning", "completion").alias("_work_text")), "_work_text",
                  (pl.col("correct") & ~pl.any_horizontal(FILTERS)) if require_work else pl.lit(False),
                  require=require_work)
    candidate = pl.col("correct") & ~pl.any_horizontal(FILTERS) & ~pl.col("bad_work")
    df = df.with_columns(
        dedup.text_hash_expr().alias("text_hash"),
        pl.when(candidate).then(dedup.sketch_expr()).alias("sketch"),
    )
    return df.select(SLIM)


def _split(problem_ids: list[str], fraction: float, seed: int) -> set[str]:
    """The validation problems: a seeded hash order of the ids, the first round(fraction * n)."""
    order = sorted(problem_ids, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    n_val = round(fraction * len(order))
    if fraction > 0 and len(order) >= 2:
        n_val = min(max(n_val, 1), len(order) - 1)
    return set(order[:n_val])


def _records(
    kept: pl.DataFrame, files: list[Path], problems: pl.DataFrame, rates: pl.DataFrame, *, repair: bool = False
) -> pl.DataFrame:
    from cotgen.prompts import student_prompt, student_target

    parts = []
    for index in kept["_file"].unique().sort():
        mine = kept.filter(pl.col("_file") == index)
        text = inputs.read_rows(files[index], mine["_row"], ["completion", "teacher", "prompt"])
        text = text.rename({"prompt": "teacher_prompt"})
        parts.append(mine.join(text, on="_row", how="left", maintain_order="left"))
    df = add_format(
        pl.concat(parts)
        if parts
        else kept.with_columns(completion=pl.lit(None, pl.String), teacher=pl.lit(None, pl.String),
                               teacher_prompt=pl.lit(None, pl.String)),
        repair=repair,
    )
    df = add_work(df.with_columns(pl.coalesce("reasoning", "completion").alias("_work_text")), "_work_text")
    df = df.join(
        problems.select("id", "question", "gold"),
        left_on="problem_id",
        right_on="id",
        how="left",
        maintain_order="left",
    ).join(rates.select("problem_id", "pass_rate"), on="problem_id", how="left", maintain_order="left")
    prompts = {q: student_prompt(q) for q in df["question"].unique()}
    return (
        df.with_columns(
            pl.col("question").replace_strict(prompts, return_dtype=pl.String).alias("prompt"),
            pl.Series(
                "completion",
                [student_target(r, a) for r, a in zip(df["reasoning"], df["answer"])],
                dtype=pl.String,
            ),
        )
        .select(list(SFT_SCHEMA.names()))
        .cast(dict(SFT_SCHEMA))
    )


def _reference_records(problems: pl.DataFrame, rates: pl.DataFrame, covered: set[str]) -> pl.DataFrame:
    """SFT records from the source's own worked solutions, for problems with no kept trace (`--reference-fallback`):
    reasoning = the solution (GSM8K's <<calculator>> notes removed), answer = the gold, teacher = "reference",
    sample_idx = -1."""
    from cotgen.prompts import student_prompt, student_target

    works = [check_work(s) for s in problems["solution"].fill_null("").to_list()]  # before the notes go
    problems = problems.with_columns(
        pl.col("solution").str.replace_all(r"<<[^>]*>>", "").str.strip_chars(),
        *(pl.Series(name, [getattr(w, attr) for w in works], dtype=pl.Int32)
          for name, attr in zip(WORK_COLUMNS, ("right", "wrong", "unchecked"))),
    )
    df = problems.filter(~pl.col("id").is_in(list(covered)) & (pl.col("solution").str.strip_chars() != "")
                         & ~pl.col("contaminated_by").is_not_null())
    df = df.join(rates.select("problem_id", "pass_rate"), left_on="id", right_on="problem_id", how="left",
                 maintain_order="left")
    return pl.DataFrame({
        "problem_id": df["id"], "sample_idx": [-1] * df.height, "source": df["source"],
        "question": df["question"], "gold": df["gold"], "answer": df["gold"], "reasoning": df["solution"],
        "prompt": [student_prompt(q) for q in df["question"]],
        "completion": [student_target(r, a) for r, a in zip(df["solution"], df["gold"])],
        "completion_tokens": [None] * df.height, "teacher": ["reference"] * df.height,
        "teacher_prompt": [None] * df.height, "pass_rate": df["pass_rate"],
        **{name: df[name] for name in WORK_COLUMNS},
    }, schema=SFT_SCHEMA)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CotgenError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CotgenError(f"--out {out} exists and is not empty; pass --overwrite to replace it")


def _publish(stage: Path, out: Path, scratch: Path) -> None:
    """Move the finished folder into place: one rename (after moving an old output aside)."""
    fsync(stage, folder=True)
    try:
        if not out.exists():
            os.rename(stage, out)
        else:
            os.rename(out, scratch / "old")
            try:
                os.rename(stage, out)
            except OSError:
                os.rename(scratch / "old", out)  # put the previous output back
                raise
    except OSError as err:
        raise cannot_write(out, err) from None
    fsync(out.parent, folder=True)


def run(cfg: FilterConfig) -> dict:
    """Filter cfg.traces into cfg.out; return the stats (also written to stats.json)."""
    started = time.monotonic()
    _prepare_out(cfg.out, cfg.overwrite)
    files = inputs.trace_files(cfg.traces)
    problems, origin = inputs.load_problems(
        cfg.problems, cfg.source, cfg.split, cfg.data_dir, cfg.limit, cfg.source_seed, cfg.traces, files
    )
    recorded = (
        "source",
        "split",
        "limit",
        "source_seed",
        "data_dir",
    )  # resolved from the traces: write them down
    cfg = dataclasses.replace(cfg, **{k: v for k, v in origin.items() if k in recorded and v is not None})
    ngrams = dedup.eval_ngrams(cfg.decontaminate, cfg.data_dir)
    problems = problems.with_columns(
        dedup.contamination(problems["question"], ngrams)
        if ngrams
        else pl.lit(None, pl.String).alias("contaminated_by")
    )
    limits = QualityLimits(
        cfg.min_tokens, cfg.max_tokens, cfg.max_repeat_frac, cfg.max_line_repeats, cfg.max_garbage_frac,
        cfg.repair_format,
    )
    scratch = temporary_beside(cfg.out, folder=True)
    try:
        work, stage = scratch / "scored", scratch / "out"
        work.mkdir()
        stage.mkdir()
        errors = 0
        with Verifier(
            workers=cfg.workers or None, timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb
        ) as verifier:
            for index, path in enumerate(files):
                for k, batch in enumerate(inputs.iter_batches(path, cfg.batch_rows)):
                    failed = pl.col("error").is_not_null() | (pl.col("finish_reason") == "error")
                    errors += batch.filter(failed).height
                    batch = batch.filter(~failed)
                    if batch.height:
                        _score(batch, index, path, problems, verifier, limits, cfg.require_work).write_parquet(
                            work / f"{index:05d}-{k:05d}.parquet"
                        )
                    log.info("scored %s, batch %d: %d traces", path.name, k, batch.height)
            symbolic_pairs = verifier.symbolic_pairs
        scored = sorted(work.glob("*.parquet"))  # file then row order
        if not scored:
            raise CotgenError(f"{cfg.traces} holds no finished traces ({errors} generation errors)")
        rows = pl.read_parquet(scored, columns=[c for c in SLIM if c != "sketch"]).with_columns(_reason())
        first = rows.select(pl.struct("problem_id", "sample_idx").is_first_distinct()).to_series()
        repeated = first.len() - first.sum()
        if repeated:  # a key written twice (e.g. two shards): the first row counts
            rows = rows.filter(first)
        sketches = pl.scan_parquet(scored).select("_file", "_row", "sketch").drop_nulls("sketch")
        rows = select(rows, sketches, k=cfg.max_per_problem, mode=cfg.select, near_dup=cfg.near_dup)
        rates = pass_rates(rows).cast(dict(PASS_RATE_SCHEMA))
        kept = (
            rows.lazy()
            .filter("kept")
            .select("problem_id", "sample_idx", "source", "answer", "_file", "_row", "completion_tokens")
            .collect()
        )
        records = _records(kept, files, problems, rates, repair=cfg.repair_format)
        references = 0
        if cfg.reference_fallback:
            fallback = _reference_records(problems, rates, set(records["problem_id"]))
            references = fallback.height
            records = pl.concat([records, fallback])
        val_ids = _split(records["problem_id"].unique().to_list(), cfg.val_fraction, cfg.seed)
        is_val = pl.col("problem_id").is_in(list(val_ids))
        train, val = records.filter(~is_val), records.filter(is_val)
        write_parquet(train, stage / "train.parquet")
        write_parquet(val, stage / "validation.parquet")
        write_parquet(rates, stage / "pass_rates.parquet")
        names = dict(enumerate(f.name for f in files))
        dropped = (
            rows.lazy()  # lazy: only the columns written are copied
            .filter(~pl.col("kept"))
            .select(
                "problem_id",
                "sample_idx",
                pl.col("_file").replace_strict(names, return_dtype=pl.String).alias("file"),
                pl.col("_row").alias("row"),
                "reason",
                "status",
                "method",
                "answer",
            )
            .collect()
        )
        write_parquet(dropped, stage / "dropped.parquet")
        del dropped
        seconds = time.monotonic() - started
        stats = report.stats(
            rows,
            rates,
            train,
            val,
            skipped={"generation_error": errors, "repeated_key": repeated},
            references=references,
            symbolic_pairs=symbolic_pairs,
            seconds=seconds,
            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        )
        report.write(stage, stats, rows, rates, cfg)
        write_resolved(cfg, stage, "filter")
        _publish(stage, cfg.out, scratch)
        return stats
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
