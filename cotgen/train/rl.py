"""`cotgen rl`: GRPO-family reinforcement learning with verifiable rewards, through Tunix's RLCluster.

The checklist, in order:
1. Cheap checks before any compute: the config (G >= 2, reward weights that keep correctness dominant), the
   problems and their gold answers, the held-out slice and the pass-rate curriculum (`rl_data.py`), the output
   folder (`--resume` needs the same config and the same problems).
2. Devices: a ("fsdp", "tp") mesh with Auto axes (pitfall 1), shared by actor, reference and rollout.
3. The policy: a model spec, a `cotgen export` folder, or a `cotgen train` run folder (its LoRA merged into
   the base). Its tokenizer must carry the stop ids (eos 1, end_of_turn 106) the sampler stops on (pitfall
   11). Prompts are `student_prompt(question)` (a Gemma turn; plain text for base models); too-long ones are
   dropped.
4. LoRA (default): qwix adapters on the policy; the frozen base is the reference model (no second copy). Full
   weights: the reference is a second load of the same weights.
5. Tunix: `RLCluster` (rollout engine "vanilla" = Tunix's sampler, or "vllm" on TPU) and the learner for
   `--algo`: GRPO (`GRPOLearner`), GSPO (the same learner with `loss_algo="gspo-token"`), Dr.GRPO
   (`DrGRPOLearner`: no std normalisation, token-sum loss) or DAPO (`DAPOLearner`: clip-higher, no KL; Tunix's
   character-count over-long shaping is off, cotgen's bounded token penalty replaces it). One policy update
   per batch (num_iterations 1), so the ratio is 1 at the update and clipping is inert. KL: Schulman's k3
   estimator by default (as DeepSeekMath's GRPO), not Tunix's default k1.
6. Rewards (`rewards.py`): correctness through the filter's verifier, strict format, over-long penalty.
7. Each step (the learner's `_generate_and_compute_advantage`, extended by `_Hooks`): evaluate the held-out
   slice when due (greedy, accuracy through the same verifier, format rate, mean length), set a fresh sampling
   seed (hash of seed and step: Tunix reuses one key otherwise, pitfall 9), then sample, score and update.
   Wall-clock timers around the cluster's `generate`, `get_ref_per_token_logps` and `update_actor` split the
   step into rollout, reference log-probs, rewards and update.
8. Orbax checkpoints (Tunix's, under OUT/checkpoints/actor; LoRA runs keep only the adapters) every
   `save_every` steps and at the end; on restart Tunix restores the latest and skips the batches already
   trained. OUT/metrics.jsonl (one row per (mode, step)), OUT/rewards.png, OUT/run.json, OUT/config.toml.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cotgen import __version__, runs
from cotgen.config import write_resolved
from cotgen.errors import CotgenError
from cotgen.train import rl_data
from cotgen.train.rewards import COMPONENTS, Rewards, Weights
from cotgen.train.rl_config import RLConfig, shaping_warning

if TYPE_CHECKING:
    from cotgen.train.metrics import JsonlBackend

log = logging.getLogger("cotgen.rl")


# ---------------------------------------------------------------------------------------------------- checks
def fingerprint(data: rl_data.RLData) -> str:
    h = hashlib.sha256()
    for df in (data.train, data.held_out):
        for pid, answer in df.select("id", "answer").iter_rows():
            h.update(f"{pid}\t{answer}\n".encode())
        h.update(b"--\n")
    return h.hexdigest()[:16]


def prompt_style(cfg: RLConfig) -> str:
    """chat for trained students (cotgen runs and exports) and instruction-tuned models; plain for base models
    (the embedded gemma-3-270m, tiny, HF folders without a chat template)."""
    if cfg.prompt_style:
        return cfg.prompt_style
    from cotgen.models import is_base_model

    return "plain" if is_base_model(cfg.model) else "chat"


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of step `step` (1-based): fresh every step, the same on resume."""
    return int.from_bytes(hashlib.sha256(f"cotgen-rl:{seed}:{step}".encode()).digest()[:4], "little") >> 1


# ---------------------------------------------------------------------------------------------------- model
def load_policy(spec: str, *, dtype: str, mesh):
    """A LoadedModel for any model spec, including `cotgen export` folders and `cotgen train` run folders (latest
    checkpoint, LoRA adapters merged into the base): `cotgen.models.load` dispatches all of them."""
    from cotgen.models.load import load

    return load(spec, dtype=dtype, mesh=mesh)


def check_tokenizer(tokenizer, style: str, where: str) -> tuple[int, ...]:
    """The stop ids the sampler ends completions on; chat prompts need <end_of_turn>."""
    from cotgen.models.tokenizer import END_OF_TURN

    stops = tuple(int(i) for i in tokenizer.stop_ids)
    if style == "chat" and tokenizer.piece_to_id(END_OF_TURN) is None:
        raise CotgenError(f"{where}: the tokenizer has no {END_OF_TURN} piece, which chat prompts end turns "
                          "with; use a Gemma 3 tokenizer or --prompt-style plain")
    return stops


def build_actor(cfg: RLConfig, loaded, mesh):
    """(actor, reference): LoRA over the loaded model, which stays the reference; or a second full copy."""
    if cfg.lora:
        from cotgen.models import lora

        return lora.adapt(loaded.model, cfg, mesh=mesh, quantize=False), loaded.model  # no QLoRA in rl
    reference = load_policy(cfg.model, dtype=cfg.dtype, mesh=mesh).model
    return loaded.model, reference


_TAIL_CLASSES: dict[tuple[type, int], type] = {}


def decode_tail_only(model, tail: int) -> bool:
    """Make a Tunix Gemma 2/3 model (and every copy its graph builds) turn only the hidden states of its last
    `tail` positions into logits. RL needs log-probs of the completion alone: Tunix's `get_per_token_logps` keeps
    `logits[:, -logits_to_keep - 1:-1]` of a full forward pass, and XLA does not push that slice into the
    vocabulary matmul (262,144 columns for Gemma 3), so the prompt's positions cost most of it. With
    `tail >= logits_to_keep + 1` Tunix's slice picks the same positions from the shorter output. Only for models
    that never sample (the sampler's prefill reads logits too): the actor and reference under a vLLM rollout.
    False where the model has no `embedder.decode` (nothing changed)."""
    embedder = getattr(model, "embedder", None)
    base = type(embedder)
    if embedder is None or not callable(getattr(base, "decode", None)):
        return False
    if base.__name__.startswith("TailDecode"):
        base = base.__mro__[1]
    cls = _TAIL_CLASSES.get((base, tail))
    if cls is None:
        def decode(self, x):
            return base.decode(self, x[:, -tail:] if x.ndim == 3 and x.shape[1] > tail else x)

        cls = type(f"TailDecode{base.__name__}", (base,), {"decode": decode, "__module__": base.__module__,
                                                            "__qualname__": f"TailDecode{base.__qualname__}"})
        _TAIL_CLASSES[(base, tail)] = cls
    embedder.__class__ = cls
    return True


def optimizer(cfg: RLConfig):
    import optax

    lr = cfg.lr
    if cfg.warmup_steps:
        lr = optax.linear_schedule(cfg.lr / (cfg.warmup_steps + 1), cfg.lr, cfg.warmup_steps)

    def make(learning_rate):
        return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                           optax.adamw(learning_rate, b1=0.9, b2=0.99, weight_decay=cfg.weight_decay))

    return optax.inject_hyperparams(make)(learning_rate=lr)  # Tunix logs hyperparams["learning_rate"]


# ---------------------------------------------------------------------------------------------------- metrics
# metrics.jsonl (`cotgen.train.metrics.JsonlBackend`): train rows join cotgen's rollout-side values (rewards,
# lengths, timings), written when the step ends, with Tunix's actor metrics (loss, kl, entropy, ...), which Tunix
# logs one step late and are written then; eval rows are written when the held-out slice is scored.
ACTOR_METRICS = ("loss", "kl", "entropy", "pg_clipfrac", "grad_norm", "learning_rate", "ppo_kl",
                 "advantage/abs_mean")


def actor_event(event: str) -> tuple[str, str] | None:
    """"actor/train/kl" -> ("train", "actor/kl") for Tunix's actor metrics in ACTOR_METRICS; None otherwise."""
    prefix, _, rest = event.partition("/")
    mode, _, name = rest.partition("/")
    if prefix == "actor" and mode == "train" and name in ACTOR_METRICS:
        return "train", f"actor/{name}"
    return None


def plot_rewards(rows: list[dict], out: Path, title: str = "") -> Path | None:
    """Reward (total and each component), KL, and held-out accuracy and format rate against step, as a PNG."""
    train = [r for r in rows if r["mode"] == "train"]
    evals = [r for r in rows if r["mode"] == "eval"]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cotgen.io import atomic_path

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), dpi=100)
    steps = [r["step"] for r in train]
    for key, label in (("reward", "total (weighted)"), *((f"reward/{c}", c) for c in COMPONENTS)):
        axes[0].plot(steps, [r.get(key) for r in train], "o-" if len(train) < 30 else "-", label=label,
                     markersize=3)
    axes[0].set_title("train rewards (components unweighted)")
    axes[1].plot(steps, [r.get("actor/kl") for r in train], "o-" if len(train) < 30 else "-", markersize=3)
    axes[1].set_title("KL to reference")
    for key, label in (("accuracy", "accuracy"), ("format_rate", "format rate")):
        axes[2].plot([r["step"] for r in evals], [r.get(key) for r in evals], "o-", label=label, markersize=4)
    axes[2].set_title("held-out (greedy)")
    axes[2].set_ylim(-0.05, 1.05)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(out)


# ---------------------------------------------------------------------------------------------------- the step
class _Hooks:
    """Mixed into a Tunix GRPO-family learner: cotgen's work around each training rollout (see `Monitor`)."""

    monitor: Monitor

    def _generate_and_compute_advantage(self, training_input, mode=None):
        from tunix.rl.rl_cluster import Mode

        mode = mode or Mode.TRAIN
        if mode != Mode.TRAIN:
            return super()._generate_and_compute_advantage(training_input, mode)
        self.monitor.before_rollout()
        example = super()._generate_and_compute_advantage(training_input, mode)
        self.monitor.after_rollout(example)
        return example

    def _compute_rewards(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return super()._compute_rewards(*args, **kwargs)
        finally:
            times = self.monitor.times
            times["reward"] = times.get("reward", 0.0) + time.perf_counter() - started


class Monitor:
    """Per-step bookkeeping: sampling seed, phase timers, held-out evaluation, metrics rows, callbacks."""

    def __init__(self, cfg: RLConfig, cluster, rewards: Rewards, metrics: JsonlBackend, held_out, eval_prompts,
                 callbacks=()):
        self.cfg, self.cluster, self.rewards, self.metrics = cfg, cluster, rewards, metrics
        self.held_out, self.eval_prompts, self.callbacks = held_out, eval_prompts, tuple(callbacks)
        self.evaluated: set[int] = set()  # steps with an eval row in metrics.jsonl
        self.times: dict[str, float] = {}
        self.step = 0
        self._sampled = np.zeros(0, dtype=np.int64)
        self._started = 0.0
        cluster.generate = self._timed(cluster.generate, "rollout", train_only=True, after=self._lengths)
        cluster.get_ref_per_token_logps = self._timed(cluster.get_ref_per_token_logps, "ref_logps")
        cluster.update_actor = self._timed(cluster.update_actor, "update", after=self._after_update)
        self._sync_s: float | None = None  # the weight sync after the last update (vLLM rollouts only)
        sync = cluster.sync_weights

        @functools.wraps(sync)
        def timed_sync(*args, **kwargs):
            started = time.perf_counter()
            out = sync(*args, **kwargs)
            self._sync_s = time.perf_counter() - started
            return out

        cluster.sync_weights = timed_sync

    def _timed(self, fn, phase: str, *, train_only: bool = False, after=None):
        import jax
        from tunix.rl.rl_cluster import Mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if train_only and kwargs.get("mode", Mode.TRAIN) != Mode.TRAIN:
                return fn(*args, **kwargs)
            started = time.perf_counter()
            out = fn(*args, **kwargs)
            jax.block_until_ready(out if out is not None else self._trainable())
            self.times[phase] = self.times.get(phase, 0.0) + time.perf_counter() - started
            if after is not None:
                after(out)
            return out

        return wrapper

    def _trainable(self):
        from flax import nnx

        return nnx.state(self.cluster.actor_trainer.model, nnx.LoRAParam if self.cfg.lora else nnx.Param)

    @property
    def done(self) -> int:
        return self.cluster.actor_trainer.train_steps

    def before_rollout(self) -> None:
        self.step = self.done + 1
        if (self.step - 1) % self.cfg.eval_every == 0:
            self.evaluate(self.step - 1)
        self.times = {}
        if self._sync_s is not None:  # the sync that brought this rollout the last update's weights
            self.times["sync"], self._sync_s = self._sync_s, None
        seed = step_seed(self.cfg.seed, self.step)
        from tunix.rl.rl_cluster import Mode

        self.cluster.get_rollout_config(Mode.TRAIN).seed = seed  # read by every generate call of this step
        self.metrics.add("train", self.step, {"seed": seed})
        self._started = time.perf_counter() - self.times.get("sync", 0.0)

    def after_rollout(self, example=None) -> None:
        raw = self.rewards.last
        total = self.rewards.weights.total(raw)
        groups = total.reshape(-1, self.cfg.num_generations)
        tokens = self._sampled
        self.metrics.add("train", self.step, {
            "reward": float(total.mean()),
            **{f"reward/{c}": float(np.mean(raw[c])) for c in COMPONENTS},
            "groups/zero_advantage_frac": float(np.mean(groups.max(axis=1) - groups.min(axis=1) < 1e-9)),
            "completions/tokens_mean": float(tokens.mean()),
            "completions/truncated_frac": float(np.mean(tokens >= self.cfg.max_tokens)),
        })

    def _lengths(self, out) -> None:
        self._sampled = np.array([len(t) for t in out.tokens])  # the stop token excluded
        self.rewards.set_lengths(self._sampled)  # the rewards of this rollout come next

    def _after_update(self, _=None) -> None:
        step_s = time.perf_counter() - self._started
        times = {f"time/{k}_s": round(v, 4) for k, v in self.times.items()}
        self.metrics.add("train", self.step, {**times, "time/step_s": round(step_s, 4)})
        row = dict(self.metrics.pending.get(("train", self.step), {}))
        # written now, so a kill after this step's checkpoint keeps its row; Tunix's actor metrics of this step
        # arrive during the next one and are written then (read() merges the two parts)
        self.metrics.flush(upto=self.step)
        if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps or self.step == 1:
            shown = [row.get(k, float("nan")) for k in ("reward", "reward/correctness", "reward/format",
                                                        "reward/length", "reward/work", "completions/tokens_mean")]
            phases = [self.times.get(k, 0.0) for k in ("rollout", "ref_logps", "reward", "update", "sync")]
            log.info("step %d/%d  reward %.3f (correct %.2f, format %.2f, length %.3f, work %.2f)  %.1f tokens  "
                     "%.1f s (rollout %.1f, ref %.1f, reward %.1f, update %.1f, sync %.1f)", self.step,
                     self.cfg.steps, *shown, step_s, *phases)
        for fn in self.callbacks:
            fn(self, self.step)

    def evaluate(self, step: int) -> dict | None:
        """Greedy completions of the held-out slice, scored by the same verifier; one eval row at `step`."""
        if not self.eval_prompts or step in self.evaluated:
            return None
        from tunix.rl.rl_cluster import Mode

        started = time.perf_counter()
        chunk = self.cfg.batch_size * self.cfg.num_generations
        prompts = list(self.eval_prompts)
        pad = (-len(prompts)) % chunk  # equal chunks: one compiled shape
        out = self.cluster.generate(prompts + prompts[:1] * pad, mode=Mode.EVAL, micro_batch_size=chunk)
        texts = out.text[:len(prompts)]
        tokens = np.array([len(t) for t in out.tokens[:len(prompts)]])
        limit = self.cfg.eval_max_tokens or self.cfg.max_tokens
        raw = self.rewards.score(texts, self.held_out["answer"].to_list(), max_tokens=limit, lengths=tokens)
        values = {"accuracy": float(raw["correctness"].mean()), "format_rate": float(raw["format"].mean()),
                  # right answer, and every checked step of its reasoning right (at least one)
                  "faithful_rate": float(np.mean((raw["correctness"] == 1) & (raw["work"] == 1))),
                  "tokens_mean": float(tokens.mean()), "truncated_frac": float(np.mean(tokens >= limit)),
                  "n": len(texts), "time/eval_s": round(time.perf_counter() - started, 3),
                  "example": texts[0][:300]}
        self.metrics.write("eval", step, values)
        self.evaluated.add(step)
        log.info("eval at step %d: accuracy %.3f, format %.3f, %.1f tokens (%d problems, %.1f s)", step,
                 values["accuracy"], values["format_rate"], values["tokens_mean"], len(texts),
                 values["time/eval_s"])
        return values


def make_learner(cfg: RLConfig, cluster, reward_fns):
    """The Tunix learner for cfg.algo, with cotgen's `_Hooks` mixed in."""
    from tunix.rl.grpo import dapo_learner, drgrpo_learner, grpo_learner

    common = dict(num_generations=cfg.num_generations, num_iterations=1, epsilon=cfg.epsilon,
                  kl_loss_mode=cfg.kl_estimator)
    if cfg.algo in ("grpo", "gspo"):
        loss_algo = "gspo-token" if cfg.algo == "gspo" else "grpo"
        algo = grpo_learner.GRPOConfig(beta=cfg.beta, loss_algo=loss_algo, **common)
        algo.epsilon_high = cfg.epsilon_high  # read by Tunix's loss when present
        base = grpo_learner.GRPOLearner
    elif cfg.algo == "drgrpo":
        algo = drgrpo_learner.DrGRPOConfig(beta=cfg.beta, **common)
        algo.epsilon_high = cfg.epsilon_high
        base = drgrpo_learner.DrGRPOLearner
    else:
        algo = dapo_learner.DAPOConfig(epsilon_high=cfg.epsilon_high, overlong_buffer=None,
                                       dynamic_sampling=False, **common)
        base = dapo_learner.DAPOLearner
    learner_cls = type(f"Cotgen{base.__name__}", (_Hooks, base), {})
    return learner_cls(rl_cluster=cluster, algo_config=algo, reward_fns=reward_fns)


def rollout_dtype(cfg: RLConfig, *, cpu: bool) -> str:
    """The vLLM rollout engine's dtype: `--rollout-dtype`, where "actor" is the actor's dtype on CPU (an AVX2 CPU
    has no bf16 matmul: vLLM decodes 2.5x faster in float32 there) and bfloat16 on GPU, and "auto" vLLM's choice
    for the machine."""
    if cfg.rollout_dtype == "actor":
        return cfg.dtype if cpu else "bfloat16"
    if cfg.rollout_dtype == "auto":
        from cotgen.engines.config import default_dtype

        return default_dtype("vllm")
    return cfg.rollout_dtype


def vllm_engine(cfg: RLConfig, loaded, prompt_tokens: int):
    """cotgen's vLLM rollout engine for this run (CPU, GPU): a functools.partial Tunix builds as it builds its
    own engines (`ClusterConfig.rollout_engine`)."""
    from cotgen.train import vllm_rollout

    seqs, max_len = vllm_rollout.engine_size(
        batch_size=cfg.batch_size, num_generations=cfg.num_generations, eval_size=cfg.eval_size,
        prompt_tokens=prompt_tokens, max_tokens=max(cfg.max_tokens, cfg.eval_max_tokens or cfg.max_tokens))
    dtype = rollout_dtype(cfg, cpu=vllm_rollout.on_cpu())
    if vllm_rollout.on_cpu() and "glibc.malloc.hugetlb" not in os.environ.get("GLIBC_TUNABLES", ""):
        log.info("vLLM on CPU: the policy update runs faster beside the engine with GLIBC_TUNABLES=%s (cotgen run "
                 "sets it for rl stages)", vllm_rollout.MALLOC_THP)
    c = loaded.config
    kv = vllm_rollout.kv_cache_bytes(seqs, max_len, layers=c.num_layers, kv_heads=c.num_kv_heads,
                                     head_dim=c.head_dim, dtype_bytes=4 if dtype == "float32" else 2)
    share = vllm_rollout.gpu_utilization_from_env()
    if share is not None:
        import jax
        import torch
        from flax import nnx

        n_params = sum(int(np.prod(w.shape)) for w in jax.tree.leaves(nnx.state(loaded.model, nnx.Param)))
        vllm_rollout.check_gpu_fit(torch.cuda.mem_get_info()[1], share, weight_bytes=2 * n_params,
                                   kv_bytes=kv)
    folder = vllm_rollout.write_config(loaded, cfg.out / "vllm-rollout", dtype)
    spec = vllm_rollout.EngineSpec(
        folder=folder, max_model_len=max_len, max_num_seqs=seqs, dtype=dtype, seed=cfg.seed,
        lora=(cfg.lora_alpha, cfg.lora_rank) if cfg.lora else None, seeding=cfg.rollout_seeding,
        enforce_eager=cfg.rollout_eager, kv_cache_bytes=kv if vllm_rollout.on_cpu() else None,
        gpu_memory_utilization=share)
    return functools.partial(vllm_rollout.make_class(), engine=spec)


def rollout_configs(cfg: RLConfig, stops: tuple[int, ...], model_path: Path | None, prompt_tokens: int,
                    tpu: bool = False):
    """{TRAIN: sampling at the temperature, EVAL: greedy} Tunix RolloutConfigs; prompts left-padded to
    `prompt_tokens`."""
    from tunix.rl.rl_cluster import Mode
    from tunix.rl.rollout.base_rollout import RolloutConfig

    eval_tokens = cfg.eval_max_tokens or cfg.max_tokens
    cache = prompt_tokens + max(cfg.max_tokens, eval_tokens)
    common = dict(max_prompt_length=prompt_tokens, kv_cache_size=cache, eos_tokens=list(stops))
    if cfg.rollout == "vllm" and tpu:  # Tunix's own engine (tpu-inference); cotgen's reads none of these
        common.update(rollout_vllm_model_version=str(model_path), rollout_vllm_init_with_random_weights=False)
    train = RolloutConfig(max_tokens_to_generate=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                          top_k=cfg.top_k, seed=step_seed(cfg.seed, 1), **common)
    greedy = RolloutConfig(max_tokens_to_generate=eval_tokens, temperature=1.0, top_p=None, top_k=None,
                           **common)
    return {Mode.TRAIN: train, Mode.EVAL: greedy}


# ---------------------------------------------------------------------------------------------------- run
def run(cfg: RLConfig, *, callbacks=()) -> dict:
    """Train; return the run summary (also written to OUT/run.json). `callbacks`: `fn(monitor, step)` after
    each update (tests use them to watch the weights)."""
    wall = time.perf_counter()
    style = prompt_style(cfg)
    cfg = dataclasses.replace(cfg, prompt_style=style)  # config.toml says which prompt ran
    data = rl_data.load(cfg)
    fp = fingerprint(data)
    resuming = runs.check_out(cfg, fp, "rl")
    if (warning := shaping_warning(cfg)) is not None:
        log.warning(warning)

    if cfg.rollout == "vllm":  # before JAX starts: on a GPU it would take 75% of the device
        from cotgen.train import vllm_rollout

        vllm_rollout.prepare_gpu(cfg.rollout_gpu_share)
    import jax
    import orbax.checkpoint as ocp
    from tunix.rl import rl_cluster as rl_cluster_lib
    from tunix.sft import metrics_logger as tunix_metrics

    from cotgen.models import family
    from cotgen.prompts import student_prompt
    from cotgen.train import metrics as train_metrics
    from cotgen.train import rollouts
    from cotgen.train.sft import make_mesh
    from cotgen.verify.verifier import Verifier

    rollouts.check(cfg.rollout, family(cfg.model), jax.default_backend())  # before any weights load
    mesh = make_mesh(cfg.mesh or "fsdp=1,tp=1")
    loaded = load_policy(cfg.model, dtype=cfg.dtype, mesh=mesh)
    tokenizer = loaded.tokenizer
    stops = check_tokenizer(tokenizer, style, cfg.model)

    def n_tokens(text: str) -> int:
        return len(tokenizer.encode(text)) + 1  # + <bos>, as the sampler adds it

    chat = style == "chat"
    train_prompts = [student_prompt(q, chat=chat) for q in data.train["question"]]
    eval_prompts = [student_prompt(q, chat=chat) for q in data.held_out["question"]]
    budget = rl_data.prompt_tokens(cfg, [*train_prompts, *eval_prompts], n_tokens)
    train, train_prompts, long_train = rl_data.drop_long_prompts(data.train, train_prompts, n_tokens, budget,
                                                                 "train")
    held_out, eval_prompts, long_eval = rl_data.drop_long_prompts(data.held_out, eval_prompts, n_tokens,
                                                                  budget, "held-out")
    if train.height == 0:
        raise CotgenError(f"every training prompt is longer than --max-prompt-tokens {budget}")

    cfg.out.mkdir(parents=True, exist_ok=True)
    write_resolved(cfg, cfg.out, "rl")
    previous = runs.read_state(cfg.out) if resuming else {}
    state = {
        "status": "running", "cotgen_version": __version__, "model": cfg.model, "method": cfg.method,
        "algo": cfg.algo, "prompt_style": style, "stop_ids": list(stops), "prompt_tokens": budget,
        "model_source": {"kind": loaded.source.kind, "path": str(loaded.source.path or "")},
        "data": {**data.stats, "dropped_long_prompts": long_train, "held_out_long_prompts": long_eval,
                 "train": train.height, "held_out": held_out.height},
        "data_fingerprint": fp, "devices": [str(d) for d in jax.devices()], "mesh": cfg.mesh,
        "runs": previous.get("runs", 0) + 1,
    }
    runs.write_state(cfg.out, state)

    actor, reference = build_actor(cfg, loaded, mesh)
    metrics = train_metrics.JsonlBackend(cfg.out / "metrics.jsonl", events=actor_event)
    backends = [metrics]
    if cfg.tensorboard:  # every event but JAX's own
        backends.append(train_metrics.TensorboardBackend(cfg.out / "tensorboard",
                                                         keep=lambda event: not event.startswith("/jax/")))
    training_config = rl_cluster_lib.RLTrainingConfig(
        actor_optimizer=optimizer(cfg),
        eval_every_n_steps=cfg.steps + 1,  # held-out evaluation is cotgen's (Monitor.evaluate)
        max_steps=cfg.steps,
        checkpoint_root_directory=str((cfg.out / "checkpoints").resolve()),
        checkpointing_options=ocp.CheckpointManagerOptions(save_interval_steps=cfg.save_every,
                                                           max_to_keep=cfg.keep_checkpoints),
        metrics_logging_options=tunix_metrics.MetricsLoggerOptions(
            log_dir=str(cfg.out / "tensorboard"),
            backend_kwargs={"custom_backend": [lambda backend=backend: backend for backend in backends]}),
        pbar_description=f"cotgen rl ({cfg.algo}, {cfg.method})",
    )
    roles = rl_cluster_lib.Role
    tpu = jax.default_backend() == "tpu"
    engine = vllm_engine(cfg, loaded, budget) if cfg.rollout == "vllm" and not tpu else cfg.rollout
    if cfg.rollout != "vanilla":  # neither model samples: log-probs of the completion (+ 1) suffice
        for model in (actor, reference):
            decode_tail_only(model, cfg.max_tokens + 1)
    cluster_config = rl_cluster_lib.ClusterConfig(
        role_to_mesh={roles.ACTOR: mesh, roles.REFERENCE: mesh, roles.ROLLOUT: mesh},
        rollout_engine=engine, offload_to_cpu=False, training_config=training_config,
        rollout_config=rollout_configs(cfg, stops, loaded.source.path, budget, tpu),
    )
    verifier = Verifier()
    rewards = Rewards(Weights(cfg.correctness_weight, cfg.format_weight, cfg.length_weight, cfg.work_weight),
                      encode=tokenizer.encode, max_tokens=cfg.max_tokens, buffer=cfg.length_buffer,
                      strict=cfg.strict_answer, verifier=verifier)
    try:
        with mesh:
            cluster = rl_cluster_lib.RLCluster(actor=actor, reference=reference, tokenizer=tokenizer,
                                               cluster_config=cluster_config)
            learner = make_learner(cfg, cluster, rewards.functions())
            monitor = Monitor(cfg, cluster, rewards, metrics, held_out, eval_prompts, callbacks)
            learner.monitor = monitor
            monitor.learner = learner
            start = cluster.actor_trainer.train_steps
            kept = train_metrics.truncate(metrics.path, start, keep_eval_at_step=True)
            monitor.evaluated = {r["step"] for r in kept if r["mode"] == "eval"}
            if start:
                log.info("resuming from the checkpoint at step %d of %d", start, cfg.steps)
            elif resuming:
                log.info("--resume: no checkpoint yet in %s, starting from step 0", cfg.out)
            if start < cfg.steps:
                batches = rl_data.batches(train, train_prompts, batch_size=cfg.batch_size, steps=cfg.steps,
                                          seed=cfg.seed, order=cfg.order)
                learner.train(batches)
            else:
                cluster.close()
            done = cluster.actor_trainer.train_steps
            metrics.flush()
            monitor.evaluate(done)
            engine_stats = rollout_stats(cluster.rollout)
    finally:
        train_metrics.unregister(backends)
        for backend in backends:  # the JSONL writer flushes its pending rows
            backend.close()
        verifier.close()

    rows = train_metrics.read(metrics.path)
    plot_rewards(rows, cfg.out / "rewards.png", title=f"{cfg.model} {cfg.algo} ({cfg.method})")
    state.update(status="done", final_step=done, resumed_from=start,
                 wall_s=round(time.perf_counter() - wall, 1),
                 checkpoint=str(cfg.out / "checkpoints" / "actor" / str(done)), rollout_engine=engine_stats,
                 **summarize(rows))
    runs.write_state(cfg.out, state)
    return state


def rollout_stats(rollout) -> dict:
    """The rollout engine's start-up and weight syncs (cotgen's vLLM engine); {"name": ...} for the others."""
    syncs = getattr(rollout, "syncs", None)
    if syncs is None:
        return {"name": type(rollout).__name__}
    later = syncs[1:] or syncs
    return {"name": "vllm", "startup_s": round(rollout.startup_s, 2), "syncs": len(syncs),
            "first_sync_s": round(syncs[0]["seconds"], 3),
            "sync_s_median": round(float(np.median([s["seconds"] for s in later])), 3),
            "sync_bytes": later[-1]["bytes"], "sync_tensors": later[-1]["tensors"],
            "sync_rss_growth_bytes_max": int(max(s["rss_growth_bytes"] for s in later))}


def summarize(rows: list[dict]) -> dict:
    """First/last rewards, last held-out metrics, and the median step-time split (steps after the first, which
    compile)."""
    train = [r for r in rows if r["mode"] == "train"]
    evals = [r for r in rows if r["mode"] == "eval"]
    steady = [r for r in train if r["step"] > 1] or train
    split = {}
    for phase in ("rollout", "ref_logps", "reward", "update", "sync", "step"):
        values = [r[f"time/{phase}_s"] for r in steady if f"time/{phase}_s" in r]
        if values:
            split[phase] = round(float(np.median(values)), 3)
    keys = ("reward", *(f"reward/{c}" for c in COMPONENTS), "actor/kl")
    return {
        "first": {k: train[0].get(k) for k in keys} if train else None,
        "last": {k: train[-1].get(k) for k in keys} if train else None,
        "first_eval": {k: evals[0].get(k) for k in ("step", "accuracy", "format_rate", "tokens_mean")}
        if evals else None,
        "last_eval": {k: evals[-1].get(k) for k in ("step", "accuracy", "format_rate", "tokens_mean")}
        if evals else None,
        "step_time_s": split,
    }
