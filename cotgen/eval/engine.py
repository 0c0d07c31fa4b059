"""Sampling for eval through generate's backends (`cotgen.generate.backend`): no second engine.

Checklist:
- one `GenerateConfig` per pass, built from the EvalConfig's fields of the same name (`model` -> `teacher`), with
  the pass's n and temperature; `Sampling` from generate's `sampling_of` (stop strings for few-shot prompts,
  Gemma's stop token ids), logprobs off.
- a generate backend samples with one `Sampling`, fixed when it is built. vllm: the sampled pass wraps the greedy
  pass's engine (`VllmBackend(..., llm=...)`), so the engine starts once. tunix and openai: a backend per pass
  (tunix loads the weights twice: seconds for the 270M).
- requests: one per problem, sample indices 0..n-1, seeds from generate's `request_seed(seed, problem_id)`.
- a backend that fails to build (a folder that does not load) is one CotgenError naming the model; a sample that
  fails is kept as an error row (scored wrong); a pass whose every sample failed stops the run.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from cotgen.errors import CotgenError
from cotgen.eval.config import EvalConfig
from cotgen.generate.backend import Request, Sample, Sampling, default_batch, open_backend, request_seed
from cotgen.generate.config import GenerateConfig
from cotgen.generate.run import sampling_of

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


def generate_config(cfg: EvalConfig, p: Pass) -> GenerateConfig:
    names = {f.name for f in dataclasses.fields(GenerateConfig)}
    names &= {f.name for f in dataclasses.fields(EvalConfig)}
    values = {name: getattr(cfg, name) for name in names}
    values.update(teacher=cfg.model, n=p.n, temperature=p.temperature, logprobs=0, shard=None,
                  top_p=cfg.top_p if p.temperature > 0 else 1.0)
    return GenerateConfig(**values)


def sample(cfg: EvalConfig, prompts: dict[str, str]) -> dict[str, PassResult]:
    """Run every pass over `prompts` (problem_id -> prompt); return each pass's samples and timings."""
    results, llm = {}, None
    for p in passes(cfg):
        gcfg = generate_config(cfg, p)
        sampling = sampling_of(gcfg)
        backend = _open(gcfg, sampling, llm)
        try:
            llm = getattr(backend, "llm", None) if cfg.backend == "vllm" else None
            requests = [Request(pid, text, tuple(range(p.n)), request_seed(cfg.seed, pid))
                        for pid, text in prompts.items()]
            results[p.name] = _run(p, backend, requests, cfg.batch_size or default_batch(gcfg), sampling)
        finally:
            if cfg.backend != "vllm":
                backend.close()
    return results


def _open(gcfg: GenerateConfig, sampling: Sampling, llm):
    try:
        if llm is not None:
            from cotgen.generate.vllm_backend import VllmBackend

            return VllmBackend(gcfg, sampling, llm=llm)
        return open_backend(gcfg, sampling)
    except CotgenError:
        raise
    except Exception as err:  # weights that do not match, a broken folder, ...: the engine's message says which
        raise CotgenError(f"model {gcfg.teacher!r} did not load with the {gcfg.backend} backend "
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
