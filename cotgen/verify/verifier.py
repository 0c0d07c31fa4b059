"""The one answer verifier: the filter, RL rewards and eval all call this module.

    verify(pred_answers, golds) -> list[Verdict]                  # answers already extracted
    score_completions(completions, golds, strict=False) -> pl.DataFrame   # extraction + verification

Cheap checks first (NeMo-Skills' `math_equal` order): both sides are cleaned (`numeric.clean`), then the
Polars numeric path (`numeric.py`) decides every row where both sides are numbers, or the gold is a number and
there is no prediction: most GSM8K rows, with no Python per row. The rest go, as unique (pred, gold) pairs, to
math-verify in sandboxed worker processes (`symbolic.py`, `sandbox.py`) with a hard per-item time and memory
limit.

A Verdict's status is one of STATUSES; only "correct" is correct. A timeout, a rejected prediction
(hostile-looking or costly: `sandbox.screen`), a crash or an error are never correct. "bad_gold" means the
gold cannot be parsed (blank, or math-verify finds nothing in it): callers drop such rows and count them;
they must never be rewarded.
`path` says who decided: "numeric" or "symbolic".
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from typing import NamedTuple

import polars as pl

from cotgen.verify.extract import extract_frame
from cotgen.verify.numeric import add_numeric_verdict, clean
from cotgen.verify.sandbox import WorkerPool, check_limits, screen

STATUSES = ("correct", "wrong", "no_answer", "bad_gold", "rejected", "timeout", "error")


def text_series(name: str, values: Sequence[str | None]) -> pl.Series:
    """A String Series; lone surrogates (invalid Unicode, which Polars refuses) become U+FFFD, which the
    sandbox screen rejects."""
    try:
        return pl.Series(name, list(values), dtype=pl.String)
    except (UnicodeEncodeError, TypeError):
        fixed = [
            v.encode("utf-8", "surrogatepass").decode("utf-8", "replace") if isinstance(v, str) else v
            for v in values
        ]
        return pl.Series(name, fixed, dtype=pl.String)


class Verdict(NamedTuple):
    correct: bool
    status: str  # one of STATUSES
    path: str  # "numeric" | "symbolic"


class Verifier:
    """Holds the sandbox worker pool (started on first use) between calls; use as a context manager or
    call `close()`. `workers` defaults to min(4, CPUs) and is at most `sandbox.MAX_WORKERS`; `timeout_s` must
    be finite and > 0. Bad values raise CotgenError here, before any worker starts."""

    def __init__(self, *, workers: int | None = None, timeout_s: float = 5.0, memory_mb: int = 1024):
        self.workers = min(4, os.cpu_count() or 1) if workers is None or workers == 0 else workers
        check_limits(workers=self.workers, timeout_s=timeout_s, memory_mb=memory_mb)
        self.timeout_s, self.memory_mb = timeout_s, memory_mb
        self._pool: WorkerPool | None = None
        self.symbolic_pairs = 0  # unique pairs sent to the workers so far

    def _symbolic(self, pairs: list[tuple[str | None, str]]) -> list[str]:
        """Statuses of unique (pred, gold) pairs: screened here (each distinct text once: many predictions
        share a gold), the rest checked in the workers, which screen again (`symbolic.check` is also a
        WorkerPool target of its own)."""
        statuses: list[str | None] = [None] * len(pairs)
        send = []
        reasons: dict[str, str | None] = {}

        def screened(text: str) -> str | None:
            if text not in reasons:
                reasons[text] = screen(text)
            return reasons[text]

        for i, (pred, gold) in enumerate(pairs):
            if gold is None or not gold.strip() or screened(gold):
                statuses[i] = "bad_gold"
            elif pred is not None and screened(pred):
                statuses[i] = "rejected"
            else:
                send.append(i)
        if send:
            if self._pool is None:
                self._pool = WorkerPool(
                    "cotgen.verify.symbolic:check",
                    workers=self.workers,
                    timeout_s=self.timeout_s,
                    memory_mb=self.memory_mb,
                )
            outcomes = self._pool.map([(*pairs[i], self.timeout_s) for i in send])
            for i, (kind, value) in zip(send, outcomes):
                statuses[i] = value if kind == "ok" else ("timeout" if kind == "timeout" else "error")
            self.symbolic_pairs += len(send)
        return statuses  # type: ignore[return-value]

    def verify_frame(self, df: pl.DataFrame, pred: str = "answer", gold: str = "gold") -> pl.DataFrame:
        """`df` with `correct` (Boolean), `status` (String) and `path` (String) added for its `pred`/`gold`
        text columns."""
        work = df.select(pl.col(pred).cast(pl.String).alias("_p"), pl.col(gold).cast(pl.String).alias("_g"))
        work = work.with_columns(clean(pl.col("_p")).alias("_pc"), clean(pl.col("_g")).alias("_gc"))
        work = work.with_columns(pl.when(pl.col("_pc").str.len_chars() > 0).then(pl.col("_pc")).alias("_pc"))
        work = add_numeric_verdict(work, "_pc", "_gc")
        todo = work.filter(~pl.col("num_decided")).select("_pc", "_gc").unique(maintain_order=True)
        if todo.height:
            statuses = self._symbolic(list(todo.iter_rows()))
            done = todo.with_columns(pl.Series("_sym", statuses, dtype=pl.String))
            work = work.join(done, on=["_pc", "_gc"], how="left", nulls_equal=True, maintain_order="left")
        else:
            work = work.with_columns(pl.lit(None, pl.String).alias("_sym"))
        numeric = (
            pl.when(pl.col("num_equal"))
            .then(pl.lit("correct"))
            .when(pl.col("_pc").is_null())
            .then(pl.lit("no_answer"))
            .otherwise(pl.lit("wrong"))
        )
        status = pl.when(pl.col("num_decided")).then(numeric).otherwise(pl.col("_sym").fill_null("error"))
        out = work.select(
            (status == "correct").alias("correct"),
            status.alias("status"),
            pl.when(pl.col("num_decided"))
            .then(pl.lit("numeric"))
            .otherwise(pl.lit("symbolic"))
            .alias("path"),
        )
        return df.with_columns(out)

    def verify(self, pred_answers: Sequence[str | None], golds: Sequence[str]) -> list[Verdict]:
        """One Verdict per (prediction, gold) pair; predictions are extracted answers (None: no answer)."""
        if len(pred_answers) != len(golds):
            raise ValueError(f"{len(pred_answers)} predictions but {len(golds)} golds")
        df = pl.DataFrame([text_series("answer", pred_answers), text_series("gold", golds)])
        return [
            Verdict(*row) for row in self.verify_frame(df).select("correct", "status", "path").iter_rows()
        ]

    def score_completions(
        self, completions: Sequence[str | None], golds: Sequence[str], *, strict: bool = False
    ) -> pl.DataFrame:
        """Extract (`extract.py` ladder) and verify. Columns: answer, method, fallback, correct, status, path.
        strict=True accepts only the `<answer>` tag (RL format anchoring): other methods give no answer."""
        if len(completions) != len(golds):
            raise ValueError(f"{len(completions)} completions but {len(golds)} golds")
        df = extract_frame(pl.DataFrame([text_series("completion", completions), text_series("gold", golds)]))
        if strict:
            df = df.with_columns(
                pl.when(pl.col("method") == "answer_tag").then(pl.col("answer")).alias("answer")
            )
        return self.verify_frame(df).select("answer", "method", "fallback", "correct", "status", "path")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_DEFAULT: Verifier | None = None


def default_verifier() -> Verifier:
    """The process-wide Verifier behind `verify` and `score_completions` (closed at exit)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Verifier()
        atexit.register(_DEFAULT.close)
    return _DEFAULT


def verify(pred_answers: Sequence[str | None], golds: Sequence[str]) -> list[Verdict]:
    """Verify extracted answers against gold answers with the default Verifier."""
    return default_verifier().verify(pred_answers, golds)


def score_completions(
    completions: Sequence[str | None], golds: Sequence[str], *, strict: bool = False
) -> pl.DataFrame:
    """Extract answers from completions and verify them with the default Verifier."""
    return default_verifier().score_completions(completions, golds, strict=strict)
