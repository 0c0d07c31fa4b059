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


# One row per sampled trace (`cotgen generate`). The key is (problem_id, sample_idx). `error` is null for a
# finished sample; a sample the backend failed on after its retries is kept as a row with `error` set,
# `finish_reason` "error" and an empty completion, and is generated again by the next run of the same command.
# `seed` is the sample's own seed where the backend seeds per sample (vllm, openai), else the batch's (tunix);
# null with `--seeding engine` (vllm, openai: the engine's generator sampled it).
# `logprobs` (when asked for) holds one entry per completion token: its id, its logprob and the top-k
# alternatives (ids and logprobs, most likely first; empty where the backend gives none).
TRACE_LOGPROB = pl.Struct(
    {"token_id": pl.Int64, "logprob": pl.Float64,
     "top_ids": pl.List(pl.Int64), "top_logprobs": pl.List(pl.Float64)}
)
TRACE_SCHEMA = pl.Schema(
    {
        "problem_id": pl.String,
        "sample_idx": pl.Int64,
        "source": pl.String,
        "split": pl.String,
        "answer": pl.String,
        "prompt": pl.String,
        "completion": pl.String,
        "finish_reason": pl.String,  # stop | length | error
        "prompt_tokens": pl.Int64,
        "completion_tokens": pl.Int64,
        "teacher": pl.String,
        "backend": pl.String,
        "prompt_style": pl.String,
        "temperature": pl.Float64,
        "top_p": pl.Float64,
        "max_tokens": pl.Int64,
        "seed": pl.Int64,
        "logprobs": pl.List(TRACE_LOGPROB),
        "error": pl.String,
    }
)


# `cotgen filter` output, train.parquet / validation.parquet: one kept trace per row, ready for SFT.
# `prompt` is `cotgen.prompts.student_prompt(question)`, `completion` is `student_target(reasoning, answer)`;
# `answer` is the trace's verified answer, `gold` the problem's; `pass_rate` the problem's share of correct
# samples.
SFT_SCHEMA = pl.Schema(
    {
        "problem_id": pl.String,
        "sample_idx": pl.Int64,
        "source": pl.String,
        "question": pl.String,
        "gold": pl.String,
        "answer": pl.String,
        "reasoning": pl.String,
        "prompt": pl.String,
        "completion": pl.String,
        "completion_tokens": pl.Int64,
        "teacher": pl.String,
        # the prompt the teacher was sampled with (8-shot for a base teacher, its chat turn otherwise); null for
        # the source's own solutions. `cotgen distill` scores the completion on it (context distillation).
        "teacher_prompt": pl.String,
        "pass_rate": pl.Float64,
        # the reasoning's arithmetic claims by verdict (cotgen.verify.steps)
        "steps_right": pl.Int32,
        "steps_wrong": pl.Int32,
        "steps_unchecked": pl.Int32,
    }
)

# `cotgen filter` output, pass_rates.parquet: one row per problem seen in the traces. pass_rate = n_correct /
# n_samples (null when the gold answer could not be parsed); contaminated_by names the evaluation set it
# overlaps (null if none). RL drops problems that are always or never solved.
PASS_RATE_SCHEMA = pl.Schema(
    {
        "problem_id": pl.String,
        "source": pl.String,
        "n_samples": pl.Int64,
        "n_parsed": pl.Int64,
        "n_correct": pl.Int64,
        "pass_rate": pl.Float64,
        "n_kept": pl.Int64,
        "contaminated_by": pl.String,
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
