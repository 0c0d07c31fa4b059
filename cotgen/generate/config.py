"""`cotgen generate` configuration: one frozen dataclass, the parameters that define an output, shard parsing.

Light module (stdlib and cotgen only): the CLI imports it before any heavy library.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from cotgen.errors import CotgenError

BACKENDS = ("vllm", "openai", "tunix")

# Parameters that define what an output folder holds. Re-running against a folder written with other values is
# refused; everything else (backend, batch size, limit, shard, concurrency...) may change between runs.
IDENTITY = ("teacher", "source", "split", "prompt_style", "shots", "shots_k", "n", "temperature", "top_p",
            "max_tokens", "seed", "logprobs", "seeding")
SEEDINGS = ("request", "engine")
# openai: the server endpoint. completions (/v1/completions, the rendered prompt as text) or chat
# (/v1/chat/completions, the prompt's user turn as a message; the server applies the model's chat template).
APIS = ("completions", "chat")


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Where samples come from: the backend and its settings, shared by `cotgen generate` and `cotgen eval`
    (eval builds one GenerateConfig per pass from its fields of the same name)."""

    backend: str = "vllm"
    batch_size: int | None = None  # problems per committed chunk / backend call; None: the backend's default
    dtype: str | None = None  # None: bfloat16 for vllm, float32 for tunix
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


@dataclasses.dataclass(frozen=True)
class GenerateConfig(EngineConfig):
    teacher: str = "gemma-3-270m"
    source: str = "gsm8k"
    split: str = "train"
    out: Path = Path("runs/traces")
    n: int = 8  # samples per problem
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int = 0
    logprobs: int = 0  # top-k logprobs per completion token; 0: none
    limit: int | None = None  # first N problems of the source
    shard: str | None = None  # "I/N": this process takes the problems whose hash falls in part I of N
    data_dir: Path | None = None
    prompt_style: str | None = None  # chat | few_shot; None: few_shot for base models, chat otherwise
    shots: str | None = None  # exemplar set for few_shot prompts; None: math for math*, else gsm8k
    shots_k: int = 8  # exemplars in a few_shot prompt
    # request (stored as None, so outputs and recipe records from before this option stay valid): every sample
    # carries its own seed (reproducible alone, whatever else is in the batch; resumes regenerate the same
    # text). engine: vllm/openai requests carry no seed and the engine's seeded generator samples the batch;
    # text then depends on batch composition, but vLLM on CPU samples the whole batch in one compiled op
    # instead of row by row (bench/bench_generate.py measures the difference).
    seeding: str | None = None

    def __post_init__(self):
        for name in ("out", "data_dir"):  # TOML gives strings
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, Path(getattr(self, name)))
        self.check_engine()
        for name, low in (("n", 1), ("max_tokens", 1), ("logprobs", 0), ("shots_k", 0)):
            if getattr(self, name) < low:
                raise CotgenError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise CotgenError("--temperature must be >= 0 and --top-p in (0, 1]")
        if self.shard is not None:
            parse_shard(self.shard)
        if self.seeding not in (None, *SEEDINGS):
            raise CotgenError(f"unknown --seeding {self.seeding!r}; known: {', '.join(SEEDINGS)}")
        if self.seeding == "request":
            object.__setattr__(self, "seeding", None)

    def identity(self) -> dict:
        """The parameters that define the output (JSON-ready)."""
        return {k: getattr(self, k) for k in IDENTITY}


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    index, sep, count = text.partition("/")
    if not (sep and index.strip().isdigit() and count.strip().isdigit()):
        raise CotgenError(f"bad --shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    i, n = int(index), int(count)
    if not 0 <= i < n:
        raise CotgenError(f"bad --shard {text!r}: need 0 <= I < N")
    return i, n


def shard_tag(shard: str | None) -> str:
    """File-name tag of a shard: 'all' or 's0of4'."""
    if shard is None:
        return "all"
    i, n = parse_shard(shard)
    return f"s{i}of{n}"


def is_base_model(teacher: str) -> bool:
    """A base (not instruction-tuned) Gemma: the embedded 270M, the tiny test model, or a local folder whose
    tokenizer has no chat template. Anything else counts as a chat model: hub names, server model names, and
    cotgen's trained students (`cotgen export` folders, `cotgen train | rl | distill` runs), which learned the
    student's chat turn."""
    from cotgen.config import run_command
    from cotgen.models import EXPORT_MANIFEST, RUN_COMMANDS
    from cotgen.models.prepare import EMBEDDED

    if teacher == EMBEDDED or teacher == "tiny" or teacher.startswith("tiny:"):
        return True
    folder = Path(teacher)
    if (folder / EXPORT_MANIFEST).is_file() or run_command(folder) in RUN_COMMANDS:
        return False
    if (folder / "config.json").is_file():
        if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
            return False
        tok = folder / "tokenizer_config.json"
        return not (tok.is_file() and "chat_template" in json.loads(tok.read_text(encoding="utf-8")))
    return False


def resolved(cfg: GenerateConfig) -> GenerateConfig:
    """Fill the defaults that depend on other values (prompt style, exemplar set, dtype), so the written
    config.toml says exactly what ran."""
    style = cfg.prompt_style or ("few_shot" if is_base_model(cfg.teacher) else "chat")
    if style not in ("chat", "few_shot"):
        raise CotgenError(f"unknown --prompt-style {style!r}; known: chat, few_shot")
    shots = cfg.shots or ("math" if cfg.source.startswith("math") else "gsm8k")
    cfg.check_api(style)
    dtype = cfg.dtype or ("float32" if cfg.backend == "tunix" else "bfloat16")
    return dataclasses.replace(cfg, prompt_style=style, shots=shots, dtype=dtype)
