"""The one interface every generation backend implements, and the per-sample seeds.

A backend is built once (`open_backend`) and then asked for one chunk at a time: `generate(requests)` returns
one `Sample` per (request, sample index), errors included, never raising for a single failed sample.
Callers (`cotgen.generate.run`, `cotgen.eval.engine`) own chunking, resumption and output; backends own only
the engine. A backend is built from (model spec, `EngineConfig`, `Sampling`): nothing of the calling stage's
own configuration reaches it.

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

from cotgen import prompts
from cotgen.engines.config import EngineConfig

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
    seed: int = 0  # the run seed: vLLM's engine generator; tunix derives each call's seed from it


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


def default_batch(backend: str, n: int) -> int:
    """Problems per committed chunk: big enough to keep an engine busy, small enough that a kill loses little;
    tunix is bounded by its prefill memory (see tunix_backend)."""
    return {"vllm": 64, "openai": 64}.get(backend) or max(1, 8 // n)


def stop_token_ids(model: str, backend: str) -> tuple[int, ...]:
    """`<eos>` and `<end_of_turn>` of the model's family (Gemma 3: 1, 106; Gemma 2: 1, 107; the tiny models: their
    own tokenizer's ids). A served model (`--backend openai`) or one whose family cannot be told gets Gemma 3's."""
    if backend == "openai":
        return prompts.GEMMA_STOP_TOKEN_IDS
    from cotgen.models import known_family, resolve

    if model.startswith("tiny"):
        from cotgen.models import tiny
        from cotgen.models.tokenizer import Tokenizer

        resolve(model)  # a bad tiny spec: one line
        return Tokenizer.from_file(tiny.tokenizer_path()).stop_ids
    if known_family(model) == "gemma2":
        from cotgen.models.families import FAMILIES

        return (1, FAMILIES["gemma2"].end_of_turn)
    return prompts.GEMMA_STOP_TOKEN_IDS


def sampling_for(model: str, backend: str, *, prompt_style: str, n: int, temperature: float, top_p: float,
                 max_tokens: int, logprobs: int = 0, seed: int = 0, seeded: bool = True) -> Sampling:
    """The `Sampling` of a run: few-shot prompts stop at the next exemplar; every prompt at the family's stop
    tokens."""
    stop = prompts.FEW_SHOT_STOP if prompt_style == "few_shot" else ()
    return Sampling(n, temperature, top_p, max_tokens, logprobs, stop, stop_token_ids(model, backend), seeded,
                    seed)


def open_backend(model: str, engine: EngineConfig, sampling: Sampling, *, llm=None) -> Backend:
    """Build the configured backend (imports its engine only now). `llm`: an engine already started by an
    earlier `open_backend` of the same model (vllm only), so a second sampling reuses it."""
    if engine.backend == "vllm":
        from cotgen.engines.vllm_backend import VllmBackend

        return VllmBackend(model, engine, sampling, llm=llm)
    if engine.backend == "openai":
        from cotgen.engines.openai_backend import OpenAIBackend

        return OpenAIBackend(model, engine, sampling)
    from cotgen.engines.tunix_backend import TunixBackend

    return TunixBackend(model, engine, sampling)
