"""`cotgen filter` configuration: one frozen dataclass.

Light module (stdlib and cotgen only): the CLI imports it before any heavy library."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from cotgen.errors import CotgenError

SELECT_MODES = ("shortest", "diverse")


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    traces: Path = Path("runs/traces")
    out: Path = Path("runs/data")
    # where the questions and gold answers come from (see cotgen/filter/inputs.py); None: from the traces
    problems: Path | None = None
    source: str | None = None
    split: str | None = None
    data_dir: Path | None = None
    limit: int | None = None
    source_seed: int | None = None  # seed of generated (rg:) sources
    # selection
    max_per_problem: int = 4
    select: str = "shortest"  # shortest | diverse
    near_dup: float = (
        0.8  # estimated Jaccard of word 5-gram sets at or above which two traces are near duplicates
    )
    decontaminate: str = ""  # e.g. "gsm8k:test,math500": drop problems sharing a word 8-gram with these
    val_fraction: float = 0.05  # share of problems (not traces) in the validation split
    seed: int = 0  # of the train/validation split
    # quality filters
    min_tokens: int = 8
    max_tokens: int = 2048
    max_repeat_frac: float = 0.7
    max_line_repeats: int = 4
    max_garbage_frac: float = 0.05
    repair_format: bool = False  # keep traces that only lack </reasoning> (their SFT target is rebuilt anyway)
    # keep only traces whose reasoning has a checked arithmetic step and no wrong one (cotgen.verify.steps);
    # for tasks with arithmetic (GSM8K, sums): a proof without numbers has no step to check
    require_work: bool = False
    # problems none of whose traces are kept train on the source's own worked solution (GSM8K's, MATH's),
    # marked teacher = "reference"; `cotgen run --smoke` sets it (its random teachers verify nothing)
    reference_fallback: bool = False
    # verifier
    workers: int = 0  # symbolic-path processes; 0: min(4, CPUs)
    timeout_s: float = 5.0  # per symbolic check; past it the worker is killed and the trace is unverified
    memory_mb: int = 1024  # address space a worker may add to its start-up size
    batch_rows: int = 20_000  # traces read and scored at a time (bounds memory)
    overwrite: bool = False  # replace an existing --out folder

    def __post_init__(self):
        for name in ("traces", "out", "problems", "data_dir"):  # TOML gives strings
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.select not in SELECT_MODES:
            raise CotgenError(f"unknown --select {self.select!r}; known: {', '.join(SELECT_MODES)}")
        for name, low in (
            ("max_per_problem", 1),
            ("min_tokens", 0),
            ("max_tokens", 1),
            ("max_line_repeats", 2),
            ("workers", 0),
            ("memory_mb", 64),
            ("batch_rows", 1),
        ):
            if getattr(self, name) < low:
                raise CotgenError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        if self.min_tokens > self.max_tokens:
            raise CotgenError(f"--min-tokens {self.min_tokens} is above --max-tokens {self.max_tokens}")
        for name in ("near_dup", "val_fraction", "max_repeat_frac", "max_garbage_frac"):
            if not 0 <= getattr(self, name) <= 1:
                raise CotgenError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        if self.val_fraction == 1:
            raise CotgenError("--val-fraction 1 leaves nothing to train on")
        if not 0 < self.timeout_s < math.inf:
            raise CotgenError(f"--timeout-s must be a finite number > 0, got {self.timeout_s}")
        if self.traces.resolve() == self.out.resolve():
            raise CotgenError("--out must differ from --traces")
