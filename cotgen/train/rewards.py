"""Verifiable rewards for `cotgen rl`: three components, each a pure function of the completions, and the
weighted functions handed to Tunix (`fn(prompts, completions, **kw) -> list[float]`, summed by Tunix).

- correctness in {0, 1}: the filter stage's extractor and verifier (`Verifier.score_completions`: one code
  path with `cotgen filter` and `cotgen eval`). strict=True reads the answer from `<answer>...</answer>` only,
  the format the student prompt asks for; a gold the verifier cannot parse ("bad_gold") is never rewarded.
- format in {0, 1}: the whole completion matches `STUDENT_FORMAT_RE` (one non-empty reasoning block, one
  non-empty answer block, nothing else).
- work in [0, 1]: the share of the reasoning's checked arithmetic steps that are right (`cotgen.verify.steps`;
  0 with no checked step), so among correct answers the one whose work holds up earns more. Off by default
  (weight 0); logged either way.
- length in [-1, 0]: DAPO's soft over-long penalty (Yu et al. 2025, eq. 13) on the completion's token count L:
  0 up to `max_tokens - buffer`, then falling linearly to -1 at `max_tokens` (a completion cut at the limit).
  Unlike Tunix's DAPO shaping (characters, unbounded below), it is counted in tokens and bounded, which is
  what keeps correctness dominant. Tunix hands reward functions text only: the trainer passes the sampled
  counts in with `set_lengths` before each call; without them L is the re-tokenized text (which can differ
  from the sampled count where decoding is not a bijection, e.g. byte-fallback garbage).

Total = wc * correctness + wf * format + wl * length + ww * work. A correct completion earns >= wc - wl, a
wrong one <= wf + ww; `rl_config.check_weights` requires wc > wf + wl + ww, so a well-formatted wrong answer
with right arithmetic never outscores a correct one.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from cotgen.prompts import STUDENT_FORMAT_RE
from cotgen.train.rl_config import check_weights

COMPONENTS = ("correctness", "format", "length", "work")


def correctness(completions: Sequence[str], golds: Sequence[str], *, strict: bool = True,
                verifier=None) -> np.ndarray:
    """1.0 where the verifier says the completion's answer equals the gold, else 0.0."""
    from cotgen.verify.verifier import default_verifier

    scored = (verifier or default_verifier()).score_completions(list(completions), [str(g) for g in golds],
                                                                strict=strict)
    return scored["correct"].fill_null(False).to_numpy().astype(np.float64)


def strict_format(completions: Sequence[str]) -> np.ndarray:
    """1.0 where the whole completion is `<reasoning>R</reasoning> <answer>A</answer>` and nothing else."""
    return np.array([1.0 if STUDENT_FORMAT_RE.match(c or "") else 0.0 for c in completions])


def step_work(completions: Sequence[str]) -> np.ndarray:
    """Share of the checked arithmetic steps in each completion's work text (`student_format.work_text`, as eval
    and filter read it) that are right; 0.0 where no step could be checked."""
    from cotgen.verify.steps import check_work
    from cotgen.verify.student_format import work_text

    out = []
    for c in completions:
        work = check_work(work_text(c))
        checked = work.right + work.wrong
        out.append(work.right / checked if checked else 0.0)
    return np.array(out, dtype=np.float64)


def overlong_penalty(lengths: Sequence[int], max_tokens: int, buffer: int) -> np.ndarray:
    """0 for L <= max_tokens - buffer, then linear down to -1 at L = max_tokens (and below it, clipped)."""
    excess = (np.asarray(lengths, dtype=np.float64) - (max_tokens - buffer)) / buffer
    return -np.clip(excess, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Weights:
    correctness: float = 1.0
    format: float = 0.2
    length: float = 0.1
    work: float = 0.0

    def __post_init__(self):
        check_weights(self.correctness, self.format, self.length, self.work)

    def total(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        return sum(getattr(self, name) * np.asarray(raw[name], dtype=np.float64) for name in COMPONENTS)


class Rewards:
    """The four components for one run: a shared verifier, the tokenizer for lengths, and a record of the raw
    values of the latest call (`last`) for cotgen's own metrics.

    `functions()` gives Tunix one weighted function per component, named after it (Tunix logs each as
    `rewards/<name>` and sums them); `score()` gives the raw components for held-out evaluation."""

    def __init__(self, weights: Weights, *, encode: Callable[[str], list[int]], max_tokens: int, buffer: int,
                 strict: bool = True, verifier=None):
        self.weights, self.encode, self.max_tokens, self.buffer = weights, encode, max_tokens, buffer
        self.strict, self.verifier = strict, verifier
        self.last: dict[str, np.ndarray] = {}
        self._lengths: np.ndarray | None = None

    def set_lengths(self, counts: Sequence[int]) -> None:
        """The sampled token counts of the completions the next reward call scores."""
        self._lengths = np.asarray(counts, dtype=np.int64)

    def tokens(self, completions: Sequence[str]) -> np.ndarray:
        """Token counts: the sampled ones when set for exactly these completions, else of the re-tokenized
        text."""
        counts, self._lengths = self._lengths, None
        if counts is not None and len(counts) == len(completions):
            return counts
        return np.array([len(self.encode(c or "")) for c in completions], dtype=np.int64)

    def score(self, completions: Sequence[str], golds: Sequence[str], *, max_tokens: int | None = None,
              lengths: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Raw components (unweighted) of each completion, plus its token count under "tokens"."""
        if lengths is not None:
            self.set_lengths(lengths)
        tokens = self.tokens(completions)
        limit = max_tokens or self.max_tokens
        return {"correctness": correctness(completions, golds, strict=self.strict, verifier=self.verifier),
                "format": strict_format(completions),
                "length": overlong_penalty(tokens, limit, min(self.buffer, limit)),
                "work": step_work(completions),
                "tokens": tokens}

    def functions(self) -> list[Callable[..., list[float]]]:
        def correctness_reward(prompts, completions, answer, **_):
            raw = correctness(completions, answer, strict=self.strict, verifier=self.verifier)
            self.last["correctness"] = raw
            return list(self.weights.correctness * raw)

        def format_reward(prompts, completions, **_):
            raw = strict_format(completions)
            self.last["format"] = raw
            return list(self.weights.format * raw)

        def length_reward(prompts, completions, **_):
            raw = overlong_penalty(self.tokens(completions), self.max_tokens, self.buffer)
            self.last["length"] = raw
            return list(self.weights.length * raw)

        def work_reward(prompts, completions, **_):
            raw = step_work(completions)
            self.last["work"] = raw
            return list(self.weights.work * raw)

        fns = [correctness_reward, format_reward, length_reward, work_reward]
        for fn, name in zip(fns, COMPONENTS):
            fn.__name__ = name
        return fns
