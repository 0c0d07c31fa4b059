"""Evaluation metrics: small pure functions on a Polars frame of verified samples.

The frame (SAMPLE_SCHEMA columns, see `cotgen.eval.records`) holds one row per sample with `pass` "greedy"
(temperature 0, one sample per problem) or "sampled" (k samples at temperature T), the extracted answer, its voting
key `vote` (null when unparsed), the verdict `correct`, `format_ok`, `completion_tokens`, `finish_reason` and the
problem's `metadata` (a JSON object; MATH carries level and subject).

- greedy pass@1: the mean of the greedy sample's verdict over problems.
- pass@k: the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k) per problem with n samples of
  which c are correct, in their numerically stable product form 1 - prod_{i=n-c+1}^{n} (1 - k/i); averaged over
  problems, for k = 1, 2, 4, ... up to n (and n itself).
- maj@k (self-consistency, Wang et al. 2023): the majority `vote` among a problem's first k samples (by
  sample_idx); unparsed answers do not vote; a tie goes to the answer whose first vote came earliest (lowest
  sample_idx), so the result is deterministic and, for k = 1, equals the first sample's verdict. The winner's
  verdict is that of its earliest sample (samples sharing a voting key share a verdict when the verifier is a
  function of the normalised answer). A problem where no sample parsed scores 0.
- Work (`cotgen.verify.steps`): faithful_rate = right answer AND work_ok (at least one right arithmetic step in the
  reasoning, no wrong one); wrong_step_rate = samples with at least one wrong step; wrong_step_share = wrong steps
  over checked steps. Greedy rates are over problems, sampled ones over samples.
- Sample errors (finish_reason "error") stay in the frame and count as wrong: a backend failure never raises a
  score.
- Rates (format compliance, truncation = finish_reason "length", unparsed, sample error, unverified = the verifier
  timed out, rejected or failed, bad gold) are over the samples of a pass. Problems whose gold the verifier cannot
  parse stay in every denominator, scored wrong, and are counted (bad_gold_rate).
  Length percentiles use linear interpolation (numpy's default).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

PASSES = ("greedy", "sampled")
LENGTH_QUANTILES = (0.5, 0.9, 0.99)
UNVERIFIED = ("timeout", "rejected", "error")  # verifier statuses that decided nothing (scored wrong)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem: 1 - C(n-c, k) / C(n, k), in the stable product form."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_k_array(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """`pass_at_k` for arrays of per-problem n and c (problems with n < k get NaN)."""
    n, c = np.asarray(n, dtype=np.int64), np.asarray(c, dtype=np.int64)
    i = np.arange(1, max(int(n.max(initial=0)), 1) + 1)  # (N,)
    inside = (i[None, :] > (n - c)[:, None]) & (i[None, :] <= n[:, None])  # (P, N): the factors n-c+1..n
    factors = np.where(inside, 1.0 - k / i[None, :], 1.0)
    out = np.where(n - c < k, 1.0, 1.0 - factors.prod(axis=1))
    return np.where(n >= k, out, np.nan)


def ks_for(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks = [1 << j for j in range(n.bit_length()) if 1 << j <= n]
    return ks + ([n] if n not in ks else [])


def per_problem(samples: pl.DataFrame) -> pl.DataFrame:
    """One row per problem: metadata, greedy verdict and format, sampled n and c, pass@k and maj@k for every k.

    Columns `pass@K` and `maj@K` exist for each K in ks_for(smallest n over problems); a run without a sampled
    pass has none of them, and `greedy_correct` is null when there was no greedy pass.
    """
    problems = samples.group_by("problem_id", maintain_order=True).agg(pl.col("metadata").first())
    work = {"greedy_faithful": pl.col("correct") & pl.col("work_ok"),
            "greedy_wrong_step": pl.col("steps_wrong") > 0} if "work_ok" in samples.columns else {}
    greedy = samples.filter(pl.col("pass") == "greedy").group_by("problem_id").agg(
        greedy_correct=pl.col("correct").sort_by("sample_idx").first(),
        greedy_format_ok=pl.col("format_ok").sort_by("sample_idx").first(),
        greedy_truncated=(pl.col("finish_reason") == "length").sort_by("sample_idx").first(),
        greedy_tokens=pl.col("completion_tokens").sort_by("sample_idx").first(),
        **{name: e.sort_by("sample_idx").first() for name, e in work.items()},
    )
    out = problems.join(greedy, on="problem_id", how="left", maintain_order="left")
    sampled = samples.filter(pl.col("pass") == "sampled")
    if sampled.height == 0:
        return out
    counts = sampled.group_by("problem_id").agg(n=pl.len(), c=pl.col("correct").sum().cast(pl.Int64))
    out = out.join(counts, on="problem_id", how="left", maintain_order="left")
    ks = ks_for(int(counts["n"].min()))
    n, c = out["n"].fill_null(0).to_numpy(), out["c"].fill_null(0).to_numpy()
    out = out.with_columns(pl.Series(f"pass@{k}", pass_at_k_array(n, c, k)) for k in ks)
    for k in ks:
        out = out.join(majority(sampled, k), on="problem_id", how="left", maintain_order="left")
        out = out.with_columns(pl.col(f"maj@{k}").fill_null(False))
    return out


def majority(sampled: pl.DataFrame, k: int) -> pl.DataFrame:
    """(problem_id, maj@k): the verdict of the majority vote among each problem's first k samples."""
    first_k = sampled.filter(pl.col("sample_idx").rank("ordinal").over("problem_id") <= k)
    votes = first_k.filter(pl.col("vote").is_not_null()).group_by("problem_id", "vote").agg(
        count=pl.len(), first=pl.col("sample_idx").min(), correct=pl.col("correct").sort_by("sample_idx").first(),
    )
    winners = votes.sort("problem_id", "count", "first", descending=[False, True, False])
    return winners.group_by("problem_id", maintain_order=True).agg(pl.col("correct").first().alias(f"maj@{k}"))


def length_stats(tokens: pl.Series) -> dict[str, float]:
    if tokens.len() == 0:
        return {}
    values = tokens.cast(pl.Float64).to_numpy()
    stats = {"mean": float(values.mean())}
    stats.update({f"p{round(q * 100)}": float(np.quantile(values, q)) for q in LENGTH_QUANTILES})
    return stats


def pass_rates(samples: pl.DataFrame) -> dict[str, float]:
    """Format compliance, truncation, unparsed and sample-error rates over the samples given; with a verifier
    `status` column also the unverified rate (timeout, rejected, error) and the bad-gold rate."""
    rates = [pl.col("format_ok").cast(pl.Float64).mean().alias("format_rate"),
             (pl.col("finish_reason") == "length").cast(pl.Float64).mean().alias("truncation_rate"),
             pl.col("vote").is_null().cast(pl.Float64).mean().alias("unparsed_rate"),
             (pl.col("finish_reason") == "error").cast(pl.Float64).mean().alias("error_rate")]
    if "work_ok" in samples.columns:
        checked = pl.col("steps_right").sum() + pl.col("steps_wrong").sum()
        rates += [(pl.col("correct") & pl.col("work_ok")).cast(pl.Float64).mean().alias("faithful_rate"),
                  (pl.col("steps_wrong") > 0).cast(pl.Float64).mean().alias("wrong_step_rate"),
                  pl.when(checked > 0).then(pl.col("steps_wrong").sum() / checked).alias("wrong_step_share")]
    if "status" in samples.columns:
        rates += [pl.col("status").is_in(UNVERIFIED).cast(pl.Float64).mean().alias("unverified_rate"),
                  (pl.col("status") == "bad_gold").cast(pl.Float64).mean().alias("bad_gold_rate")]
    return samples.select(rates).row(0, named=True)


def summarize(samples: pl.DataFrame, problems: pl.DataFrame | None = None) -> dict[str, float]:
    """Flat, namespaced metrics (`greedy/pass@1`, `sampled/pass@4`, `sampled/maj@4`, `greedy/length_p90`...)."""
    problems = per_problem(samples) if problems is None else problems
    out: dict[str, float] = {"problems": problems.height}
    for name in PASSES:
        part = samples.filter(pl.col("pass") == name)
        if part.height == 0:
            continue
        out[f"{name}/samples"] = part.height
        if name == "greedy":
            out["greedy/pass@1"] = _mean(problems["greedy_correct"])
        else:
            for col in problems.columns:
                if col.startswith(("pass@", "maj@")):
                    out[f"sampled/{col}"] = _mean(problems[col])
        out.update({f"{name}/{key}": value for key, value in pass_rates(part).items()})
        lengths = length_stats(part["completion_tokens"])
        out.update({f"{name}/length_{key}": value for key, value in lengths.items()})
    return out


def breakdown(problems: pl.DataFrame, by: str) -> pl.DataFrame:
    """Per value of metadata field `by` (e.g. level, subject): problems, greedy pass@1 and the largest-k pass@k
    and maj@k. Empty when no problem's metadata has the field."""
    rows = problems.with_columns(pl.col("metadata").str.json_path_match(f"$.{by}").alias(by))
    rows = rows.filter(pl.col(by).is_not_null())
    if rows.height == 0:
        return pl.DataFrame(schema={by: pl.String, "problems": pl.UInt32})
    top = [c for c in (_largest(problems, "pass@"), _largest(problems, "maj@")) if c]
    metrics = ([pl.col("greedy_correct").cast(pl.Float64).mean().alias("greedy/pass@1")]
               if problems["greedy_correct"].null_count() < problems.height else [])
    metrics += [pl.col(c).cast(pl.Float64).mean().alias(f"sampled/{c}") for c in top]
    return rows.group_by(by).agg(pl.len().alias("problems"), *metrics).sort(by)


def _largest(problems: pl.DataFrame, prefix: str) -> str | None:
    ks = [int(c[len(prefix):]) for c in problems.columns if c.startswith(prefix)]
    return f"{prefix}{max(ks)}" if ks else None


def _mean(series: pl.Series) -> float:
    value = series.cast(pl.Float64).mean()
    return float("nan") if value is None else float(value)
