"""`cotgen rl` configuration: one frozen dataclass, checked on construction (before any data or model is
read).

Light module (stdlib and light cotgen modules only): the CLI imports it before any heavy library.

Reward weights are checked here so that correctness dominates whatever the weights: with correctness and
format in {0, 1}, the length penalty in [-1, 0] and the work reward in [0, 1], a correct completion earns at
least `wc - wl` and a wrong one at most `wf + ww`, so every allowed config has `wc > wf + wl + ww` (all weights
>= 0).

That holds for the rewards, not for the advantages of every algorithm: grpo and gspo divide each group's
rewards by their standard deviation, so in a group where correctness ties (every completion wrong) a small
format or length difference is scaled up to a full-size advantage. drgrpo only centres each group, so each
term moves the policy in proportion to its weight. `cotgen rl` warns when shaping meets that rescaling.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

from cotgen.errors import CotgenError
from cotgen.train.config import DEFAULT_LORA_MODULES, DTYPES, parse_mesh

ALGOS = ("grpo", "gspo", "drgrpo", "dapo")
ROLLOUTS = ("vanilla", "vllm")
ROLLOUT_SEEDINGS = ("request", "engine")
PROMPT_STYLES = ("chat", "plain")
ORDERS = ("shuffle", "easy_first")
ROLLOUT_DTYPES = ("actor", "auto", "float32", "bfloat16")
# Tunix's per-token KL estimators: low_var_kl is Schulman's k3, (r - 1) - log r with r = ref/policy, the one
# DeepSeekMath's GRPO uses (zero gradient where the policies agree); Tunix defaults to "kl", k1 =
# log(policy/ref), whose per-sample gradient is not zero even at the reference.
KL_ESTIMATORS = ("low_var_kl", "kl", "mse_kl")

# Fields that may change between a run and its --resume: they change neither the batches nor the updates of
# the steps already taken (the learning rate is constant after warm-up, so --steps may grow).
RESUMABLE = ("resume", "out", "data_dir", "steps", "eval_every", "save_every", "keep_checkpoints",
             "log_every", "tensorboard", "rollout_eager", "rollout_gpu_share")


def check_weights(correctness: float, fmt: float, length: float, work: float = 0.0) -> None:
    """Raise unless a correct completion always outscores a wrong one: all >= 0 and correctness > format +
    length + work. (Among correct answers, right work then outscores wrong work: the work reward is the share
    of checked steps that are right.)"""
    for name, w in (("correctness", correctness), ("format", fmt), ("length", length), ("work", work)):
        if not w >= 0:  # also catches NaN
            raise CotgenError(f"--{name}-weight must be >= 0, got {w}")
    if not correctness > fmt + length + work:
        raise CotgenError(
            f"reward weights let a wrong answer outscore a correct one: correctness ({correctness}) must "
            f"exceed format + length + work ({fmt} + {length} + {work} = {fmt + length + work}); a "
            "well-formatted wrong answer with right arithmetic earns up to format + work and a correct but "
            "over-long, unformatted one with no checked step as little as correctness - length")


def shaping_warning(cfg) -> str | None:
    """What `cotgen rl` warns of when shaping weights meet an algorithm that rescales each group by its spread."""
    shaping = cfg.format_weight + cfg.length_weight + cfg.work_weight
    if cfg.algo == "drgrpo" or shaping == 0:
        return None
    return (f"--algo {cfg.algo} divides each group's rewards by their spread: where every completion of a problem "
            f"is wrong, format, length and work differences (weights {shaping:g} in all) get full-size advantages; "
            "--algo drgrpo keeps them in proportion")


@dataclasses.dataclass(frozen=True)
class RLConfig:
    model: str = "gemma-3-270m"  # a model spec, a `cotgen export` folder, or a `cotgen train` run folder
    source: str = "gsm8k"
    split: str = "train"
    out: Path = Path("runs/rl")
    data_dir: Path | None = None
    limit: int | None = None  # first N problems of the source (the size of a generated rg: set)
    # algorithm: grpo, gspo (GRPO with sequence-level importance ratios), drgrpo, dapo (clip-higher, no KL)
    algo: str = "grpo"
    num_generations: int = 4  # G completions per problem
    beta: float | None = None  # KL weight; None: 0.04 (dapo: none, it has no KL term)
    kl_estimator: str = "low_var_kl"
    epsilon: float = 0.2
    epsilon_high: float | None = None  # upper clip; None: epsilon (dapo: 0.28)
    steps: int = 100
    batch_size: int = 2  # problems per step; a step trains on batch_size x num_generations completions
    # what is trained: LoRA (rank > 0) over a frozen base that doubles as the reference model, or full weights
    lora_rank: int = 16
    lora_alpha: float | None = None  # None: 2 x rank
    lora_modules: str = DEFAULT_LORA_MODULES
    dtype: str = "float32"
    # optimiser: AdamW at a constant rate after a linear warm-up, global-norm clipping
    lr: float | None = None  # None: 1e-5 with LoRA, 1e-6 for full weights
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # sampling
    max_tokens: int = 256  # generated tokens per completion
    # prompts are left-padded to this and longer ones dropped; None: the longest prompt rounded up to 16 (vllm)
    # or 64 (the padding is paid in every rollout prefill and update, so a fixed 256 for 70-token prompts costs ~2x)
    max_prompt_tokens: int | None = None
    temperature: float = 0.9
    top_p: float = 1.0
    top_k: int | None = None
    prompt_style: str | None = None  # chat | plain; None: plain for base models, chat for trained students
    # vanilla (Tunix's sampler, any platform) | vllm (CPU/GPU: cotgen's in-process vLLM engine with the weights
    # synced every step, cotgen.train.vllm_rollout; TPU: Tunix's own, through tpu-inference)
    rollout: str = "vanilla"
    rollout_seeding: str = "request"  # vllm: request (request i seeded with the step seed + i) | engine (faster)
    rollout_eager: bool = True  # vllm: no torch.compile (start-up ~16 s instead of ~60 s on CPU)
    rollout_gpu_share: float = 0.3  # vllm on GPU: vLLM's share of the device; XLA gets 0.95 - this
    # vllm: the engine's dtype. actor: the actor's --dtype on CPU, bfloat16 on GPU; auto: vLLM's own choice
    # for the machine (cotgen.engines.config.default_dtype: bfloat16 where the CPU has bf16 matmuls)
    rollout_dtype: str = "actor"
    # rewards (see the module docstring for the dominance rule)
    correctness_weight: float = 1.0
    format_weight: float = 0.2
    length_weight: float = 0.1
    work_weight: float = 0.0  # share of the reasoning's checked arithmetic steps that are right (verify/steps.py)
    length_buffer: int | None = None  # the penalty ramps over the last N tokens before max_tokens; None: 1/4
    strict_answer: bool = True  # correctness reads <answer>...</answer> only; False: the extraction ladder
    # curriculum from pass rates (`cotgen filter`'s pass_rates.parquet: problem_id, pass_rate)
    pass_rates: Path | None = None
    pass_rate_min: float = 0.0  # keep problems with pass_rate_min < rate < pass_rate_max (unrated ones too)
    pass_rate_max: float = 1.0
    order: str = "shuffle"  # shuffle (each epoch) | easy_first (highest pass rate first, unrated last)
    # held-out evaluation: greedy, accuracy through the verifier, format rate, mean length
    eval_every: int = 10  # steps; also before the first step and after the last
    eval_size: int = 16  # problems; held out of training (or taken from eval_split)
    eval_split: str | None = None  # None: hold eval_size problems out of the training split
    eval_max_tokens: int | None = None  # None: max_tokens
    # checkpoints, logs, devices
    save_every: int = 10
    keep_checkpoints: int = 3
    log_every: int = 1
    tensorboard: bool = False
    mesh: str | None = None  # "fsdp=F,tp=T"; None: one device
    seed: int = 0  # data order, held-out choice, LoRA init, rg: generation, and every step's sampling seed
    resume: bool = False
    # rl trains plain LoRA over an unquantised base (read by cotgen.models.lora.adapt; not options)
    qlora: ClassVar[bool] = False
    qlora_tile_size: ClassVar[int] = 64

    def __post_init__(self):
        for name in ("out", "data_dir", "pass_rates"):  # TOML gives strings
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.algo not in ALGOS:
            raise CotgenError(f"unknown --algo {self.algo!r}; known: {', '.join(ALGOS)}")
        if self.rollout not in ROLLOUTS:
            raise CotgenError(f"unknown --rollout {self.rollout!r}; known: {', '.join(ROLLOUTS)}")
        if self.rollout_seeding not in ROLLOUT_SEEDINGS:
            raise CotgenError(f"unknown --rollout-seeding {self.rollout_seeding!r}; "
                              f"known: {', '.join(ROLLOUT_SEEDINGS)}")
        if self.prompt_style is not None and self.prompt_style not in PROMPT_STYLES:
            raise CotgenError(f"unknown --prompt-style {self.prompt_style!r}; "
                              f"known: {', '.join(PROMPT_STYLES)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise CotgenError(f"unknown --kl-estimator {self.kl_estimator!r}; "
                              f"known: {', '.join(KL_ESTIMATORS)}")
        if self.order not in ORDERS:
            raise CotgenError(f"unknown --order {self.order!r}; known: {', '.join(ORDERS)}")
        if self.dtype not in DTYPES:
            raise CotgenError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.rollout_dtype not in ROLLOUT_DTYPES:
            raise CotgenError(f"--rollout-dtype must be one of {', '.join(ROLLOUT_DTYPES)}, got {self.rollout_dtype!r}")
        if self.num_generations < 2:
            raise CotgenError(f"--num-generations must be >= 2 (GRPO compares completions within a group), "
                              f"got {self.num_generations}")
        for name, low in (("steps", 1), ("batch_size", 1), ("lora_rank", 0), ("warmup_steps", 0),
                          ("max_tokens", 1), ("eval_every", 1), ("eval_size", 0),
                          ("save_every", 1), ("keep_checkpoints", 1), ("log_every", 1)):
            if getattr(self, name) < low:
                raise CotgenError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        for name in ("limit", "top_k", "eval_max_tokens", "max_prompt_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise CotgenError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.algo == "dapo":
            if self.beta not in (None, 0.0):
                raise CotgenError("--algo dapo has no KL term: leave --beta unset")
        elif self.beta is None:
            object.__setattr__(self, "beta", 0.04)
        elif not self.beta >= 0:
            raise CotgenError(f"--beta must be >= 0, got {self.beta}")
        if self.epsilon_high is None:
            object.__setattr__(self, "epsilon_high", 0.28 if self.algo == "dapo" else self.epsilon)
        if not 0 < self.epsilon <= self.epsilon_high:
            raise CotgenError(f"need 0 < --epsilon <= --epsilon-high, got {self.epsilon} and "
                              f"{self.epsilon_high}")
        if self.lora_alpha is None and self.lora_rank:
            object.__setattr__(self, "lora_alpha", 2.0 * self.lora_rank)
        if self.lr is None:
            object.__setattr__(self, "lr", 1e-5 if self.lora_rank else 1e-6)
        if not (self.lr > 0 and self.max_grad_norm > 0 and self.weight_decay >= 0):
            raise CotgenError("--lr and --max-grad-norm must be > 0 and --weight-decay >= 0")
        if not self.temperature > 0:
            raise CotgenError(f"--temperature must be > 0 (GRPO needs different completions), "
                              f"got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise CotgenError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.length_buffer is None:
            object.__setattr__(self, "length_buffer", max(1, self.max_tokens // 4))
        if not 1 <= self.length_buffer <= self.max_tokens:
            raise CotgenError(f"--length-buffer must be in [1, max_tokens={self.max_tokens}], "
                              f"got {self.length_buffer}")
        check_weights(self.correctness_weight, self.format_weight, self.length_weight, self.work_weight)
        if not 0 <= self.pass_rate_min < self.pass_rate_max <= 1:
            raise CotgenError(f"need 0 <= --pass-rate-min < --pass-rate-max <= 1, got {self.pass_rate_min} "
                              f"and {self.pass_rate_max}")
        if self.mesh is not None:
            fsdp = parse_mesh(self.mesh)["fsdp"]
            if (self.batch_size * self.num_generations) % fsdp:
                raise CotgenError(f"--batch-size x --num-generations ({self.batch_size * self.num_generations}) "
                                  f"must be a multiple of the mesh's fsdp size {fsdp}: completions are split "
                                  "over it")

    @property
    def lora(self) -> bool:
        return self.lora_rank > 0

    @property
    def method(self) -> str:
        return "lora" if self.lora else "full"


def identity(cfg: RLConfig) -> dict:
    """The fields that define what a run folder holds (everything but RESUMABLE), as TOML-ready values."""
    from cotgen.config import to_dict

    return {k: v for k, v in to_dict(cfg).items() if k not in RESUMABLE}
