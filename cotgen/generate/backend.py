"""The one interface every generation backend implements, and the per-sample seeds.

A backend is built once (`open_backend`) and then asked for one chunk at a time: `generate(requests)` returns
one `Sample` per (request, sample index), errors included, never raising for a single failed sample. The
runner (`cotgen.generate.run`) owns chunking, resumption and output; backends own only the engine.

Seeds: a request's seed is a hash of (run seed, problem_id); sample i of it uses request seed + i. That is
exactly what vLLM does when it fans a request with `n` samples out into child requests (child i gets seed +
i), so asking for samples 0..n-1 in one request, or sample i alone with seed + i, gives the same stream: a
resumed run can regenerate any missing subset. Backends that seed per batch (tunix) record the batch's seed
instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Protocol

from cotgen.generate.config import GenerateConfig

SEED_SPACE = 2**31 - 2**16  # request seed + sample index stays a positive int32


@dataclasses.dataclass(frozen=True)
class Sampling:
    """What to sample, the same for every request of a run."""

    n: int
    temperature: float
    top_p: float
    max_tokens: int
    logprobs: int  # top-k per token; 0: none
    stop: tuple[str, ...]  # stop strings (cut from the completion)
    stop_token_ids: tuple[int, ...]
    seeded: bool = True  # False (--seeding engine): requests carry no seed; the engine's generator samples


@dataclasses.dataclass(frozen=True)
class Request:
    """One prompt and the sample indices still wanted for it."""

    problem_id: str
    prompt: str
    sample_indices: tuple[int, ...]
    seed: int  # request seed; sample i uses seed + i


@dataclasses.dataclass
class Sample:
    """One generated sample (or its error); the runner adds the run-wide columns of TRACE_SCHEMA."""

    problem_id: str
    sample_idx: int
    completion: str
    finish_reason: str  # stop | length | error
    prompt_tokens: int
    completion_tokens: int
    seed: int
    logprobs: list[dict] | None = None  # TRACE_LOGPROB entries
    error: str | None = None


class Backend(Protocol):
    name: str

    def generate(self, requests: list[Request]) -> list[Sample]: ...

    # optional: `plan(requests)` sees every pending request once, before the first chunk (tunix sizes its
    # shapes from it)

    def close(self) -> None: ...


def request_seed(seed: int, problem_id: str) -> int:
    digest = hashlib.sha256(f"cotgen-generate/{seed}/{problem_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % SEED_SPACE


def runs(indices: tuple[int, ...]) -> list[tuple[int, int]]:
    """Sorted sample indices -> maximal contiguous (start, count) runs: (0,1,2,5) -> [(0, 3), (5, 1)]."""
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and out[-1][0] + out[-1][1] == i:
            out[-1][1] += 1
        else:
            out.append([i, 1])
    return [(a, b) for a, b in out]


def error_samples(request: Request, message: str) -> list[Sample]:
    return [Sample(request.problem_id, i, "", "error", 0, 0, request.seed + i, None, message)
            for i in request.sample_indices]


def default_batch(cfg: GenerateConfig) -> int:
    """Problems per committed chunk: big enough to keep an engine busy, small enough that a kill loses little;
    tunix is bounded by its prefill memory (see tunix_backend)."""
    return {"vllm": 64, "openai": 64}.get(cfg.backend) or max(1, 8 // cfg.n)


def open_backend(cfg: GenerateConfig, sampling: Sampling) -> Backend:
    """Build the configured backend (imports its engine only now)."""
    if cfg.backend == "vllm":
        from cotgen.generate.vllm_backend import VllmBackend

        return VllmBackend(cfg, sampling)
    if cfg.backend == "openai":
        from cotgen.generate.openai_backend import OpenAIBackend

        return OpenAIBackend(cfg, sampling)
    from cotgen.generate.tunix_backend import TunixBackend

    return TunixBackend(cfg, sampling)
