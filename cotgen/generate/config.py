"""`cotgen generate` configuration: one frozen dataclass, the parameters that define an output, shard parsing.

Light module (stdlib and cotgen only): the CLI imports it before any heavy library.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cotgen.engines.config import EngineConfig
from cotgen.errors import CotgenError

# Parameters that define what an output folder holds. Re-running against a folder written with other values is
# refused; everything else (backend, batch size, limit, shard, concurrency...) may change between runs.
IDENTITY = ("teacher", "source", "split", "prompt_style", "shots", "shots_k", "n", "temperature", "top_p",
            "max_tokens", "seed", "logprobs", "seeding")
SEEDINGS = ("request", "engine")
PROMPT_STYLES = ("chat", "few_shot")


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
        if self.prompt_style not in (None, *PROMPT_STYLES):
            raise CotgenError(f"unknown --prompt-style {self.prompt_style!r}; known: {', '.join(PROMPT_STYLES)}")
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


def resolved(cfg: GenerateConfig) -> GenerateConfig:
    """Fill the defaults that depend on other values (prompt style, exemplar set, dtype), so the written
    config.toml says exactly what ran."""
    from cotgen.models import is_base_model  # not at import: the CLI loads this module for --help

    style = cfg.prompt_style or ("few_shot" if is_base_model(cfg.teacher) else "chat")
    shots = cfg.shots or ("math" if cfg.source.startswith("math") else "gsm8k")
    cfg.check_api(style)
    from cotgen.engines.config import default_dtype

    dtype = cfg.dtype or default_dtype(cfg.backend)
    return dataclasses.replace(cfg, prompt_style=style, shots=shots, dtype=dtype)
