"""The student output format check (`<reasoning>...</reasoning><answer>...</answer>`), shared by filter's quality
filters and eval's `format_ok`: `cotgen.prompts.STUDENT_FORMAT_RE`, and with `repair` `UNCLOSED_REASONING_RE`;
and `work_text`, the text whose arithmetic filter, eval and the rl step reward check.
"""

from __future__ import annotations

import polars as pl

from cotgen.prompts import STUDENT_FORMAT_RE, UNCLOSED_REASONING_RE


def add_format(df: pl.DataFrame, text: str = "completion", *, repair: bool = False) -> pl.DataFrame:
    """Add `reasoning` and `tag_answer`: the stripped groups of STUDENT_FORMAT_RE (or, with `repair`, of
    UNCLOSED_REASONING_RE), null when neither matches; and `format_repaired`."""
    reasoning, answer, repaired = [], [], []
    for t in df[text]:
        m = STUDENT_FORMAT_RE.match(t) if t is not None else None
        fixed = m is None and repair and t is not None and (m := UNCLOSED_REASONING_RE.match(t)) is not None
        reasoning.append(m.group("reasoning").strip() if m else None)
        answer.append(m.group("answer").strip() if m else None)
        repaired.append(bool(fixed))
    return df.with_columns(
        pl.Series("reasoning", reasoning, dtype=pl.String), pl.Series("tag_answer", answer, dtype=pl.String),
        pl.Series("format_repaired", repaired, dtype=pl.Boolean),
    )


def work_text(completion: str | None) -> str:
    """The text a completion's arithmetic steps are read from: its reasoning where the whole student format
    matches (`add_format`'s `reasoning`), else the whole completion (a broken format hides nothing from the step
    checker). Filter, eval and the rl step reward all read this text."""
    m = STUDENT_FORMAT_RE.match(completion) if completion is not None else None
    return m.group("reasoning").strip() if m else (completion or "")
