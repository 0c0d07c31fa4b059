"""Sampling for eval through the shared engines (`cotgen.engines`): no second engine, no generate config.

Checklist:
- the backend is built from (model, the EvalConfig as its `EngineConfig`, one `Sampling` per pass from
  `cotgen.engines.backend.sampling_for`: the pass's n and temperature, stop strings for few-shot prompts, the
  family's stop token ids), logprobs off.
- a backend samples with one `Sampling`, fixed when it is built. vllm: the sampled pass reuses the greedy
  pass's engine (`open_backend(..., llm=...)`), so the engine starts once. tunix and openai: a backend per pass
  (tunix loads the weights twice: seconds for the 270M).
- requests: one per problem, sample indices 0..n-1, seeds from `request_seed(seed, problem_id)`.
- a backend that fails to build (a folder that does not load) is one CotgenError naming the model; a sample that
  fails is kept as an error row (scored wrong); a pass whose every sample failed stops the run.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from cotgen.engines.backend import Request, Sample, Sampling, default_batch, open_backend, request_seed, sampling_for
from cotgen.errors import CotgenError
from cotgen.eval.config import EvalConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Pass:
    name: str  # greedy | sampled
    n: int
    temperature: float


@dataclasses.dataclass
class PassResult:
    samples: list[Sample]
    sampling: Sampling
    startup_s: float
    generation_s: float


def passes(cfg: EvalConfig) -> list[Pass]:
    """Greedy (temperature 0, one sample) always; k samples at the temperature when k > 1."""
    out = [Pass("greedy", 1, 0.0)]
    return out + ([Pass("sampled", cfg.k, cfg.temperature)] if cfg.k > 1 else [])


def sampling_of(cfg: EvalConfig, p: Pass) -> Sampling:
    return sampling_for(cfg.model, cfg.backend, prompt_style=cfg.prompt_style, n=p.n, temperature=p.temperature,
                        top_p=cfg.top_p if p.temperature > 0 else 1.0, max_tokens=cfg.max_tokens,
                        seed=cfg.seed)


def sample(cfg: EvalConfig, prompts: dict[str, str]) -> dict[str, PassResult]:
    """Run every pass over `prompts` (problem_id -> prompt); return each pass's samples and timings."""
    results, llm = {}, None
    for p in passes(cfg):
        sampling = sampling_of(cfg, p)
        backend = _open(cfg, sampling, llm)
        try:
            llm = getattr(backend, "llm", None) if cfg.backend == "vllm" else None
            requests = [Request(pid, text, tuple(range(p.n)), request_seed(cfg.seed, pid))
                        for pid, text in prompts.items()]
            results[p.name] = _run(p, backend, requests, cfg.batch_size or default_batch(cfg.backend, p.n), sampling)
        finally:
            if cfg.backend != "vllm":
                backend.close()
    return results


def _open(cfg: EvalConfig, sampling: Sampling, llm):
    try:
        return open_backend(cfg.model, cfg, sampling, llm=llm)
    except CotgenError:
        raise
    except Exception as err:  # weights that do not match, a broken folder, ...: the engine's message says which
        raise CotgenError(f"model {cfg.model!r} did not load with the {cfg.backend} backend "
                          f"({type(err).__name__}: {err})") from err


def _run(p: Pass, backend, requests: list[Request], batch: int, sampling: Sampling) -> PassResult:
    samples: list[Sample] = []
    gen_s, tokens = 0.0, 0
    for at in range(0, len(requests), batch):
        start = time.perf_counter()
        chunk = backend.generate(requests[at:at + batch])
        gen_s += time.perf_counter() - start
        samples += chunk
        tokens += sum(s.completion_tokens for s in chunk)
        log.info("%s: %d/%d problems, %.1f completion tok/s", p.name, min(at + batch, len(requests)),
                 len(requests), tokens / max(gen_s, 1e-9))
    errors = [s for s in samples if s.error is not None]
    if samples and len(errors) == len(samples):
        raise CotgenError(f"every {p.name} sample failed ({errors[0].error})")
    if errors:
        log.warning("%s: %d of %d samples failed (scored wrong); first: %s", p.name, len(errors), len(samples),
                    errors[0].error)
    return PassResult(samples, sampling, getattr(backend, "startup_s", 0.0), gen_s)
