"""`cotgen train` configuration: one frozen dataclass, the mesh flag parser, and which fields define a run.

Light module (stdlib and cotgen only): the CLI imports it before any heavy library.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cotgen.errors import CotgenError

# Every projection of Gemma 3 (Tunix module names): attention q, kv (or fused qkv), output, and the three MLP
# kernels. Embeddings and norms stay frozen under LoRA.
DEFAULT_LORA_MODULES = (".*q_einsum|.*kv_einsum|.*qkv_einsum|.*attn_vec_einsum"
                        "|.*gate_proj|.*up_proj|.*down_proj")
DTYPES = ("float32", "bfloat16")
MESH_AXES = ("fsdp", "tp")

# Fields that may change between a run and its --resume: they do not change the weights it ends at. The data
# is compared by content (a fingerprint in run.json), not by path, and `out` is the folder itself.
RESUMABLE = ("resume", "tensorboard", "log_every", "keep_checkpoints", "distributed", "data", "out")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str = "gemma-3-270m"
    data: Path = Path("runs/data")  # folder with train.parquet (+ validation.parquet), or a .parquet/.jsonl
    out: Path = Path("runs/sft")
    # what is trained: full weights (lora_rank 0), LoRA, or QLoRA (LoRA over an nf4-quantised frozen base)
    lora_rank: int = 0
    lora_alpha: float | None = None  # None: 2 x rank
    lora_modules: str = DEFAULT_LORA_MODULES
    qlora: bool = False
    qlora_tile_size: int = 64  # nf4 block size along the contracting axis
    dtype: str = "float32"  # parameter dtype (bfloat16 is slower than float32 on CPU)
    # how long: --steps wins over --epochs; neither: one epoch
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 8  # rows per step (a packed row holds several examples)
    max_len: int = 1024  # tokens per row; longer examples are cut at the end of their completion
    packing: bool = True
    pack_window: int = 512  # examples packed together (first-fit decreasing per window of the shuffle)
    seed: int = 0  # data order and LoRA initialisation
    # optimiser: AdamW, linear warmup then cosine decay to min_lr_ratio x lr, global-norm gradient clipping
    lr: float | None = None  # None: 2e-4 with LoRA, 2e-5 for full weights
    warmup_steps: int | None = None  # None: 3% of the steps
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    # checkpoints, evaluation, logs
    save_every: int = 100
    keep_checkpoints: int = 3
    eval_every: int = 100
    eval_batches: int | None = 16  # validation batches per evaluation; None: the whole validation set
    log_every: int = 10
    tensorboard: bool = True
    # devices
    mesh: str | None = None  # "fsdp=F,tp=T"; None: one device
    distributed: bool = False  # call jax.distributed.initialize() first (multi-host TPU slices, SLURM)
    resume: bool = False

    def __post_init__(self):
        for name in ("data", "out"):  # TOML gives strings
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.qlora and self.lora_rank == 0:
            object.__setattr__(self, "lora_rank", 16)
        if self.lora_alpha is None and self.lora_rank:
            object.__setattr__(self, "lora_alpha", 2.0 * self.lora_rank)
        if self.lr is None:
            object.__setattr__(self, "lr", 2e-4 if self.lora_rank else 2e-5)
        if self.dtype not in DTYPES:
            raise CotgenError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name, low in (("lora_rank", 0), ("batch_size", 1), ("max_len", 8), ("pack_window", 1),
                          ("save_every", 1), ("keep_checkpoints", 1), ("eval_every", 1), ("log_every", 1),
                          ("qlora_tile_size", 1)):
            if getattr(self, name) < low:
                raise CotgenError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise CotgenError(f"--steps must be >= 1, got {self.steps}")
        if self.epochs is not None and self.epochs <= 0:
            raise CotgenError(f"--epochs must be > 0, got {self.epochs}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1 or self.max_grad_norm <= 0:
            raise CotgenError("--lr and --max-grad-norm must be > 0 and --min-lr-ratio in [0, 1]")
        if self.mesh is not None:
            parse_mesh(self.mesh)

    @property
    def lora(self) -> bool:
        return self.lora_rank > 0

    @property
    def method(self) -> str:
        return "qlora" if self.qlora else "lora" if self.lora else "full"


def parse_mesh(text: str) -> dict[str, int]:
    """"fsdp=2,tp=1" -> {"fsdp": 2, "tp": 1}; missing axes are 1."""
    sizes = dict.fromkeys(MESH_AXES, 1)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in MESH_AXES or not value.isdigit() or int(value) < 1:
            raise CotgenError(f"--mesh {text!r}: expected a comma list of AXIS=SIZE with AXIS in "
                              f"{', '.join(MESH_AXES)} and SIZE >= 1, e.g. fsdp=2,tp=1")
        sizes[name] = int(value)
    return sizes


def identity(cfg: TrainConfig) -> dict:
    """The fields that define what a run folder holds (everything but RESUMABLE), as TOML-ready values."""
    from cotgen.config import to_dict

    return {k: v for k, v in to_dict(cfg).items() if k not in RESUMABLE}
