"""Duplicate traces and evaluation-set contamination.

Duplicates, per problem:
- exact: same completion once whitespace runs are collapsed (`text_hash`, a Polars hash);
- near: estimated Jaccard similarity of word 5-gram sets (the `quality.shingle_expr` hashes) at or above a
  threshold (0.8 by default). Each trace keeps a bottom-k sketch (the k = 64 smallest distinct shingle hashes,
  32 bits each, Broder 1997); the Jaccard of two traces is estimated from the k smallest hashes of the union
  of their sketches, and is exact for traces with fewer than k distinct shingles. Candidates are visited in
  preference order and a trace goes if it is too similar to one already kept (`select.py`).

Contamination, as open-r1's `scripts/decontaminate.py` does: lower-cased word 8-grams of every question of the
named evaluation sets (`gsm8k:test,math500`; the split defaults to test) are collected; a training problem
whose question shares any 8-gram with them (or, if shorter than 8 words, equals an evaluation question
word for word) is removed with all its traces.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from cotgen.errors import CotgenError

SKETCH = 64
NGRAM = 8
_WORD = re.compile(r"\w+")


def text_hash_expr(text: str = "completion") -> pl.Expr:
    return pl.col(text).str.replace_all(r"\s+", " ").str.strip_chars().hash(7)


def sketch_expr(shingles: str = "shingles", k: int = SKETCH) -> pl.Expr:
    """List[UInt32]: the k smallest distinct shingle hashes (their top 32 bits), ascending."""
    return pl.col(shingles).list.eval((pl.element() // 2**32).cast(pl.UInt32).unique().sort().head(k))


def jaccard(a: list[int], b: list[int], k: int = SKETCH) -> float:
    """Estimated Jaccard similarity of two shingle sets from their bottom-k sketches."""
    if not a or not b:
        return 1.0 if not a and not b else 0.0
    sa, sb = set(a), set(b)
    union = sorted(sa | sb)[:k]
    return sum(1 for h in union if h in sa and h in sb) / len(union)


# ---- contamination ----------------------------------------------------------------------------------------


def parse_spec(spec: str | None) -> list[tuple[str, str]]:
    """`gsm8k:test,math500` -> [("gsm8k", "test"), ("math500", "test")]."""
    out = []
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        name, _, split = part.partition(":")
        if not name:
            raise CotgenError(f"bad --decontaminate entry {part!r}: expected SOURCE[:SPLIT], e.g. gsm8k:test")
        out.append((name, split or "test"))
    return out


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _grams(words: list[str], n: int) -> set[str]:
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def eval_ngrams(spec: str | None, data_dir: str | Path | None, n: int = NGRAM) -> dict[str, set[str]]:
    """{"gsm8k:test": {8-grams and short whole questions}, ...} for the sources named in `spec`."""
    from cotgen.sources import load_problems

    out = {}
    for name, split in parse_spec(spec):
        questions = load_problems(name, split, data_dir=data_dir)["question"]
        grams: set[str] = set()
        for q in questions:
            words = _words(q)
            grams |= _grams(words, n)
            grams.add(" ".join(words))
        out[f"{name}:{split}"] = grams
    return out


def contamination(questions: pl.Series, ngrams: dict[str, set[str]], n: int = NGRAM) -> pl.Series:
    """For each question, the first evaluation set it overlaps ("gsm8k:test"), or null."""
    hits: list[str | None] = []
    for q in questions:
        words = _words(q or "")
        mine = _grams(words, n) if len(words) >= n else {" ".join(words)}
        hits.append(next((name for name, grams in ngrams.items() if not grams.isdisjoint(mine)), None))
    return pl.Series("contaminated_by", hits, dtype=pl.String)
