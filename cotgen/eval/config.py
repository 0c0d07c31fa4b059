"""`cotgen eval` configuration: one frozen dataclass, checked on construction (before any work).

Light module (stdlib and light cotgen modules only): the CLI imports it before any heavy library.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cotgen.engines.config import EngineConfig
from cotgen.errors import CotgenError

PROMPT_STYLES = ("chat", "few_shot")


@dataclasses.dataclass(frozen=True)
class EvalConfig(EngineConfig):
    model: str = "gemma-3-270m"
    source: str = "gsm8k"
    split: str = "test"
    out: Path = Path("runs/eval")
    k: int = 1  # samples per problem at `temperature` besides the greedy one; 1: greedy only
    temperature: float = 0.6  # of the k samples (the greedy pass is always temperature 0)
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int = 0
    limit: int | None = None  # first N problems of the source
    data_dir: Path | None = None
    prompt_style: str | None = None  # chat | few_shot; None: few_shot for base models, chat otherwise
    shots: str | None = None  # exemplar set of few_shot prompts; None: math for math*, else gsm8k
    shots_k: int | None = None  # exemplars per few_shot prompt; None: the whole set (gsm8k 8, math 4)
    enforce_eager: bool = True  # eval jobs are short: start in ~16 s rather than compile for ~60 s

    def __post_init__(self):
        for name in ("out", "data_dir"):  # TOML gives strings
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, Path(getattr(self, name)))
        self.check_engine()
        for name, low in (("k", 1), ("max_tokens", 1), ("shots_k", 0), ("limit", 1)):
            if getattr(self, name) is not None and getattr(self, name) < low:
                raise CotgenError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        if not 0 < self.top_p <= 1:
            raise CotgenError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.k > 1 and self.temperature <= 0:
            raise CotgenError(f"--k {self.k} needs --temperature > 0 (k greedy samples would all be the same)")
        if self.temperature < 0:
            raise CotgenError(f"--temperature must be >= 0, got {self.temperature}")
        if self.prompt_style is not None and self.prompt_style not in PROMPT_STYLES:
            raise CotgenError(f"unknown --prompt-style {self.prompt_style!r}; known: {', '.join(PROMPT_STYLES)}")


def resolved(cfg: EvalConfig) -> EvalConfig:
    """Fill the defaults that depend on other values, so config.toml and the protocol say exactly what ran:
    few_shot prompts for base models (the embedded gemma-3-270m, tiny, folders without a chat template), the
    student chat prompt otherwise; the MATH exemplars (Minerva's 4) for math sources, else GSM8K's 8 (Wei et al.);
    all exemplars of the set; the backend's dtype."""
    from cotgen.models import is_base_model  # imports numpy: not at `cotgen eval --help`
    from cotgen.prompts import load_shots

    style = cfg.prompt_style or ("few_shot" if is_base_model(cfg.model) else "chat")
    cfg.check_api(style)
    shots = cfg.shots or ("math" if cfg.source.startswith("math") else "gsm8k")
    shots_k = len(load_shots(shots)) if cfg.shots_k is None else cfg.shots_k
    from cotgen.engines.config import default_dtype

    dtype = cfg.dtype or default_dtype(cfg.backend)
    return dataclasses.replace(cfg, prompt_style=style, shots=shots, shots_k=shots_k, dtype=dtype)
