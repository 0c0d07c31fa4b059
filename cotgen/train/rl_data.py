"""RL data: problems, the held-out slice, the pass-rate curriculum, and the batches (numpy only).

- Problems come from `cotgen.sources.load_problems` (PROBLEM_SCHEMA); every row has a gold answer there.
- Held-out slice: `eval_size` problems taken from `eval_split` when given, else chosen by a seeded hash of the
  problem ids and removed from training (before the curriculum, so evaluation covers every difficulty).
- Curriculum (`pass_rates`): a problem whose pass rate is 0 or 1 gives every completion of its group the same
  reward, hence zero advantage and no gradient; keep `lo < rate < hi`. Problems absent from the file are kept
  (unrated); a null rate (the filter could not parse the gold) drops the problem.
- Order: "shuffle" visits the problems in `permutation(seed, epoch)`; "easy_first" by pass rate, highest
  first, unrated last, the same every epoch. Batches of `batch_size` problems flow across epoch boundaries, so
  batch `i` is a function of (problems, seed, i): a resumed run sees the batches an uninterrupted one would.

A batch is what Tunix's GRPO learner takes (pitfall 2: numpy arrays, not lists): `prompts`, `answer` (the
gold, read by the correctness reward) and `problem_id`, each a (batch_size,) string array.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import polars as pl

from cotgen.errors import CotgenError, InputError
from cotgen.io import read_parquet

log = logging.getLogger("cotgen.rl")


@dataclasses.dataclass(frozen=True)
class RLData:
    train: pl.DataFrame  # id, question, answer, pass_rate (null: unrated), in visiting order for easy_first
    held_out: pl.DataFrame  # id, question, answer
    stats: dict


def _hash_order(ids: list[str], seed: int) -> list[str]:
    return sorted(ids, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())


def read_pass_rates(path: Path) -> pl.DataFrame:
    """problem_id (String) and pass_rate (Float64) of a pass_rates.parquet (from `cotgen filter` or eval)."""
    path = Path(path)
    df = read_parquet(path, missing="pass-rates file not found")
    for name in ("problem_id", "pass_rate"):
        if name not in df.columns:
            raise InputError(path, f"column is missing; columns: {', '.join(df.columns)}", field=name)
    if df.schema["problem_id"] != pl.String or not df.schema["pass_rate"].is_numeric():
        raise InputError(path, f"expected problem_id String and pass_rate numeric, got "
                               f"{df.schema['problem_id']} and {df.schema['pass_rate']}")
    df = df.select("problem_id", pl.col("pass_rate").cast(pl.Float64))
    bad = df.filter(pl.col("pass_rate").is_not_null() & ~pl.col("pass_rate").is_between(0, 1)).head(1)
    if bad.height:
        raise InputError(path, f"pass rate {bad['pass_rate'][0]} of {bad['problem_id'][0]} is not in [0, 1]",
                         field="pass_rate")
    return df.unique("problem_id", keep="first", maintain_order=True)


def curriculum(problems: pl.DataFrame, rates: pl.DataFrame | None, *, lo: float = 0.0, hi: float = 1.0,
               order: str = "shuffle", source: str = "pass rates") -> tuple[pl.DataFrame, dict]:
    """Problems kept for training (with a `pass_rate` column, null for unrated) and counts of what went."""
    if rates is None:
        return problems.with_columns(pass_rate=pl.lit(None, pl.Float64)), {"unrated": problems.height}
    joined = problems.join(rates.with_columns(rated=pl.lit(True)), left_on="id", right_on="problem_id",
                           how="left", maintain_order="left")
    rated = joined["rated"].fill_null(False)
    if problems.height and not rated.any():
        raise CotgenError(f"{source}: none of its problem ids matches the {problems.height} problems loaded; "
                          "was it written for another source or split?")
    rate = pl.col("pass_rate")
    stats = {
        "unrated": int((~rated).sum()),
        "dropped_bad_gold": joined.filter(pl.col("rated") & rate.is_null()).height,
        "dropped_too_hard": joined.filter(rate <= lo).height,  # never (or too rarely) solved
        "dropped_too_easy": joined.filter(rate >= hi).height,  # always (or too often) solved
    }
    kept = joined.filter(pl.col("rated").is_null() | ((rate > lo) & (rate < hi))).drop("rated")
    if order == "easy_first":
        kept = kept.sort(pl.col("pass_rate"), descending=True, nulls_last=True, maintain_order=True)
    return kept, stats


def split_held_out(problems: pl.DataFrame, size: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, held_out): `size` problems chosen by a seeded hash order of their ids; the rest train."""
    if size == 0:
        return problems, problems.head(0)
    if problems.height <= size:
        raise CotgenError(f"{problems.height} problems cannot spare {size} for the held-out slice; lower "
                          "--eval-size, raise --limit or pass --eval-split")
    chosen = set(_hash_order(problems["id"].to_list(), seed)[:size])
    mask = problems["id"].is_in(list(chosen))
    return problems.filter(~mask), problems.filter(mask)


def load(cfg) -> RLData:
    """Problems, held-out slice and curriculum for an RLConfig (no model needed)."""
    from cotgen.sources import load_problems

    problems = load_problems(cfg.source, cfg.split, data_dir=cfg.data_dir, limit=cfg.limit, seed=cfg.seed)
    problems = problems.select("id", "question", "answer").unique("id", keep="first", maintain_order=True)
    if problems.height == 0:
        raise CotgenError(f"{cfg.source}/{cfg.split} holds no problems")
    if cfg.eval_split is not None and cfg.eval_size:
        held = load_problems(cfg.source, cfg.eval_split, data_dir=cfg.data_dir, seed=cfg.seed,
                             limit=cfg.eval_size if cfg.source.startswith("rg:") else None)
        held = held.select("id", "question", "answer").head(cfg.eval_size)
        train = problems.filter(~pl.col("id").is_in(held["id"].implode()))
    else:
        train, held = split_held_out(problems, cfg.eval_size, cfg.seed)
    rates = read_pass_rates(cfg.pass_rates) if cfg.pass_rates is not None else None
    train, stats = curriculum(train, rates, lo=cfg.pass_rate_min, hi=cfg.pass_rate_max, order=cfg.order,
                              source=str(cfg.pass_rates))
    if train.height == 0:
        raise CotgenError(f"no training problems left after the curriculum ({stats}); "
                          "widen --pass-rate-min/max")
    stats = {"problems": problems.height, "held_out": held.height, **stats, "train": train.height}
    log.info("problems: %s", ", ".join(f"{k} {v}" for k, v in stats.items()))
    return RLData(train, held, stats)


def prompt_multiple(rollout: str) -> int:
    """What the default prompt budget is rounded up to: 16 under cotgen's vLLM rollout (CPU and GPU), whose
    padding is cotgen's own and whose prompt rows are pure cost in the reference pass and the update (measured on
    the 270M, 2026-12-04, 64-token completions: padding to 96 instead of 128 took the update 25.7 -> 22.9 s and
    the step 36.7 -> 33.6 s); 64 elsewhere (Tunix's sampler and the TPU's kernels)."""
    return 16 if rollout == "vllm" else 64


def prompt_budget(prompts: list[str], n_tokens: Callable[[str], int], multiple: int = 64) -> int:
    """The longest prompt's token count rounded up to `multiple`: the padded prompt length of every rollout."""
    longest = max((n_tokens(p) for p in prompts), default=1)
    return -(-longest // multiple) * multiple


def prompt_tokens(cfg, prompts: list, n_tokens: Callable) -> int:
    """A run's padded prompt length: `cfg.max_prompt_tokens`, else the longest prompt rounded up to its
    rollout's `prompt_multiple` (`cotgen rl` and the recipe dry-run both ask here)."""
    return cfg.max_prompt_tokens or prompt_budget(prompts, n_tokens, multiple=prompt_multiple(cfg.rollout))


def drop_long_prompts(df: pl.DataFrame, prompts: list[str], n_tokens: Callable[[str], int], limit: int,
                      what: str) -> tuple[pl.DataFrame, list[str], int]:
    """Rows whose prompt fits `limit` tokens, their prompts, and how many were dropped."""
    keep = [n_tokens(p) <= limit for p in prompts]
    dropped = len(keep) - sum(keep)
    if dropped:
        log.warning("%s: dropped %d of %d problems whose prompt exceeds --max-prompt-tokens %d", what,
                    dropped, len(keep), limit)
    return df.filter(pl.Series(keep, dtype=pl.Boolean)), [p for p, k in zip(prompts, keep) if k], dropped


def visit_order(n: int, epoch: int, seed: int, order: str) -> np.ndarray:
    """Indices of the training problems in the order epoch `epoch` visits them."""
    if order == "easy_first":
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(n: int, batch_size: int, step: int, seed: int, order: str) -> np.ndarray:
    """Problem indices of batch `step` (0-based): positions step*B .. step*B+B-1 of the epochs laid end to
    end."""
    start = step * batch_size
    out = []
    epoch, offset = divmod(start, n)
    while len(out) < batch_size:
        perm = visit_order(n, epoch, seed, order)
        take = perm[offset:offset + batch_size - len(out)]
        out.extend(take.tolist())
        epoch, offset = epoch + 1, 0
    return np.asarray(out, dtype=np.int64)


def batches(train: pl.DataFrame, prompts: list[str], *, batch_size: int, steps: int, seed: int, order: str
            ) -> Iterator[dict[str, np.ndarray]]:
    """`steps` batches of `batch_size` problems: {"prompts", "answer", "problem_id"} string arrays."""
    ids, answers = np.array(train["id"].to_list()), np.array(train["answer"].to_list())
    prompt_arr = np.array(prompts)
    for step in range(steps):
        idx = batch_indices(len(ids), batch_size, step, seed, order)
        yield {"prompts": prompt_arr[idx], "answer": answers[idx], "problem_id": ids[idx]}
