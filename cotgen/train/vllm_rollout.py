"""`cotgen rl --rollout vllm` on CPU and GPU: Tunix's rollouts sampled by one in-process `vllm.LLM`, with the
policy's weights pushed into the running engine after every update.

Tunix 0.1.7 takes any `BaseRollout` subclass as `ClusterConfig.rollout_engine` (built with `rollout_actor=,
tokenizer=, mesh=, rollout_config=`), so this needs no patch to Tunix; its own "vllm" engine goes through
tpu-inference (TPU only) and has no Gemma 2/3 weight mapping. The checklist, read against the pinned sources:

- Engine: `vllm.LLM` in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, so `collective_rpc` hands the weight
  iterator to the worker by reference, no serialisation), `load_format="dummy"` over a folder holding only the
  policy's `config.json` (no weights read from disk, ever), `skip_tokenizer_init=True`: prompts go in as token ids
  built exactly as Tunix's sampler builds them (`<bos>` + encode, duplicate `<bos>` dropped) and completions are
  decoded with the same tokenizer, so both engines see and return the same tokens. The real weights arrive by
  the first sync, before any sampling.
- Sampling (`generate`): one request per prompt (GRPO's prompts arrive repeated G times), request i seeded with
  the step's seed + i (the same samples on resume; `seeding="engine"` sends no per-request seed, faster on CPU);
  greedy when Tunix's config is greedy (top_p and top_k both None, as its sampler decides) or temperature 0;
  stop ids = the config's eos tokens. Returned as Tunix's sampler returns them: completion tokens up to the
  first stop id (excluded), prompts left-padded with pad to `max_prompt_length` (Tunix's next power of two when
  a prompt is longer), text decoded from the tokens, per-token log-probs of the sampled tokens when asked
  (vLLM's processed log-probs: after temperature, as Tunix's sampler reports them).
- Weight sync (`update_params`, which Tunix's learner calls through `RLCluster.sync_weights` after every
  update): the actor's weights with LoRA merged (W + alpha/r A B, `cotgen.models.lora`), renamed to the HF
  names `cotgen export` writes (`cotgen.models.hf.to_hf`), cast to the engine's dtype, loaded with vLLM's own
  `reload_weights(weights_iterator=...)` (its layerwise reload runs each layer's post-load processing again),
  then the prefix cache is reset. With LoRA only the adapted decoder layers are sent (all the weights of each
  vLLM layer they touch, e.g. q, k and v together for `qkv_proj`); embeddings and norms never change. Tunix
  calls `sync_weights` inside a CPU transfer guard; the sync steps out of it (the weights must reach host
  memory, in memory, never on disk). Each sync's time and resident-memory growth are kept (`syncs`).
- `get_per_token_logps` (Tunix asks it only for num_iterations > 1) scores with the actor in JAX, which holds
  the same weights.
- Memory: on CPU the KV cache is sized from the batch (every sequence at full length, twice over) and capped
  by the machine's available memory; on GPU `prepare_gpu` sets vLLM's `gpu_memory_utilization` and XLA's
  memory fraction together, with an error before any work when they cannot both fit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np

from cotgen.errors import CotgenError

log = logging.getLogger("cotgen.rl.vllm")

SEEDINGS = ("request", "engine")
QUIET_DURING_SYNC = ("vllm.model_executor.model_loader.reload.layerwise", "vllm.v1.worker.gpu_model_runner")
GIB = 1 << 30
# glibc's malloc on transparent huge pages (glibc >= 2.35; read at process start, so set by whoever starts the
# process: `cotgen run` for an rl stage with a vLLM rollout on CPU). XLA's CPU runtime maps and unmaps its large
# buffers every step; beside the engine each 4 KiB page fault cost ~3.5x more kernel time (measured, update 1.3x
# slower), and 2 MiB pages make those faults 50-250x fewer.
MALLOC_THP = "glibc.malloc.hugetlb=1"


# ---------------------------------------------------------------------------------------------------- memory
def kv_cache_bytes(seqs: int, max_model_len: int, *, layers: int, kv_heads: int, head_dim: int,
                   dtype_bytes: int = 2, available: int | None = None) -> int:
    """KV cache for `seqs` sequences at full length, twice over (vLLM's blocks and scheduling slack), at least
    64 MiB, at most a quarter of the machine's available memory."""
    need = 2 * seqs * max_model_len * layers * kv_heads * head_dim * 2 * dtype_bytes
    if available is None:
        available = available_memory()
    cap = available // 4
    if need > cap:
        raise CotgenError(f"--rollout vllm: the KV cache for {seqs} sequences of {max_model_len} tokens needs "
                          f"{need / GIB:.1f} GiB, more than a quarter of the {available / GIB:.1f} GiB available; "
                          "lower --batch-size, -G or --max-tokens")
    return max(need, 64 << 20)


def engine_size(*, batch_size: int, num_generations: int, eval_size: int, prompt_tokens: int,
                max_tokens: int) -> tuple[int, int]:
    """(sequences at once, tokens per sequence) the engine is built for: a step's completions or the held-out
    slice (at most 256 at a time), the padded prompt plus the longest completion (+8 for the stop tokens)."""
    return max(batch_size * num_generations, min(eval_size, 256), 1), prompt_tokens + max_tokens + 8


def available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def with_malloc_thp(env: dict[str, str]) -> dict[str, str]:
    """`env` with MALLOC_THP added to GLIBC_TUNABLES, unless the user already chose glibc.malloc.hugetlb."""
    env = dict(env)
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" not in tunables:
        env["GLIBC_TUNABLES"] = ":".join(t for t in (tunables, MALLOC_THP) if t)
    return env


def without_malloc_thp(env: dict[str, str]) -> dict[str, str]:
    """`env` with any glibc.malloc.hugetlb tunable removed."""
    env = dict(env)
    kept = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and not t.startswith("glibc.malloc.hugetlb")]
    env.pop("GLIBC_TUNABLES", None)
    if kept:
        env["GLIBC_TUNABLES"] = ":".join(kept)
    return env


def on_cpu() -> bool:
    from cotgen.engines.vllm_backend import cpu_build

    return cpu_build() or os.environ.get("VLLM_TARGET_DEVICE") == "cpu"


GPU_SHARE_ENV = "COTGEN_VLLM_GPU_SHARE"  # set by prepare_gpu: vLLM's share of the device, read by the engine


def prepare_gpu(vllm_share: float, margin: float = 0.05) -> float | None:
    """Before JAX starts (it takes 75% of a GPU by default): with the GPU build of vLLM, give XLA
    1 - margin - `vllm_share` of the device (`XLA_PYTHON_CLIENT_MEM_FRACTION`, unless the user set it) and keep
    `vllm_share` for vLLM's `gpu_memory_utilization`. Returns XLA's fraction, None off the GPU."""
    if on_cpu() or os.environ.get("VLLM_TARGET_DEVICE") == "tpu":
        return None
    if not 0.05 <= vllm_share <= 0.9:
        raise CotgenError(f"--rollout-gpu-share must be in [0.05, 0.9], got {vllm_share}")
    xla = os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION")
    if xla is not None:
        try:
            xla_fraction = float(xla)
        except ValueError:
            raise CotgenError(f"XLA_PYTHON_CLIENT_MEM_FRACTION={xla!r} is not a number") from None
        if xla_fraction + vllm_share > 1.0 - margin:
            raise CotgenError(f"XLA_PYTHON_CLIENT_MEM_FRACTION={xla} and --rollout-gpu-share {vllm_share} add up to "
                              f"more than {1.0 - margin:.2f} of the device: lower one of them")
    else:
        xla_fraction = round(1.0 - margin - vllm_share, 3)
        os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = str(xla_fraction)
    os.environ[GPU_SHARE_ENV] = str(vllm_share)
    return xla_fraction


def gpu_utilization_from_env() -> float | None:
    share = os.environ.get(GPU_SHARE_ENV)
    return None if share is None or on_cpu() else float(share)


def check_gpu_fit(total_bytes: int, share: float, *, weight_bytes: int, kv_bytes: int) -> None:
    """vLLM's weights and KV cache (+10% for activations and graphs) must fit its share of the device."""
    need = (weight_bytes + kv_bytes) * 1.10
    if need > share * total_bytes:
        raise CotgenError(f"--rollout vllm: vLLM needs {need / GIB:.1f} GiB (weights {weight_bytes / GIB:.1f} + KV "
                          f"cache {kv_bytes / GIB:.1f}, +10%) but its share {share} of the device is "
                          f"{share * total_bytes / GIB:.1f} GiB: raise --rollout-gpu-share (JAX keeps the rest)")


# ---------------------------------------------------------------------------------------------------- weights
def _block(key: str) -> tuple[str, str] | None:
    """("3", "attn") for "layers.3.attn.q_einsum.w"; None outside a decoder layer's attention and MLP."""
    parts = key.split(".")
    if parts[0] == "layers" and len(parts) > 3 and parts[2] in ("attn", "mlp"):
        return parts[1], parts[2]
    return None


def sync_keys(keys, adapted) -> list[str]:
    """The base weights a LoRA sync sends: every attention and MLP weight of each decoder layer with an
    adapted weight (so every vLLM layer that is loaded is loaded whole: q, k, v make `qkv_proj`)."""
    touched = {_block(k) for k in adapted} - {None}
    adapted = set(adapted)
    return [k for k in keys if _block(k) in touched or k in adapted]


class WeightSync:
    """The actor's current weights as the HF-named tensors vLLM loads: everything on the first call, then
    (LoRA) only the adapted layers, each W + alpha/r A B from the frozen base cached once in float32."""

    def __init__(self, actor, *, lora: tuple[float, int] | None, dtype: str):
        self.actor, self.lora, self.dtype = actor, lora, dtype
        self._base: dict[str, np.ndarray] | None = None  # LoRA: the frozen base of the adapted blocks

    def tensors(self) -> dict:
        import torch

        from cotgen.models import lora as lora_lib
        from cotgen.models.hf import to_hf

        if self.lora is None:
            params = lora_lib.flat_params(self.actor)
        else:
            alpha, rank = self.lora
            deltas = lora_lib.lora_deltas(self.actor, alpha, rank)
            if self._base is None:  # the first sync: every weight, and the base of the adapted blocks kept
                params = lora_lib.flat_params(self.actor)
                self._base = {k: params[k].astype(np.float32) for k in sync_keys(params, deltas)}
            else:
                params = dict(self._base)
            for k, delta in deltas.items():
                params[k] = self._base[k] + delta
        dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[self.dtype]
        with warnings.catch_warnings():  # arrays from JAX are read-only; vLLM only reads them
            warnings.simplefilter("ignore", UserWarning)
            return {name: torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).to(dtype)
                    for name, w in to_hf(params).items()}


# ---------------------------------------------------------------------------------------------------- engine
@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """What `cotgen rl` decides before Tunix builds the rollout (cotgen.train.rl)."""
    folder: Path  # holds config.json (the policy's architecture); nothing else is read
    max_model_len: int
    max_num_seqs: int
    dtype: str = "bfloat16"
    seed: int = 0
    lora: tuple[float, int] | None = None  # (alpha, rank) of the actor's adapters
    seeding: str = "request"
    enforce_eager: bool = True
    kv_cache_bytes: int | None = None  # CPU: chosen from the batch and the machine
    gpu_memory_utilization: float | None = None  # GPU: from prepare_gpu (--rollout-gpu-share)


def write_config(loaded, folder: Path, dtype: str) -> Path:
    """`folder/config.json` for the policy: the base's own when it is a HF folder, else written from the Tunix
    config (as `cotgen export` writes it)."""
    from cotgen.models.hf import hf_config

    folder.mkdir(parents=True, exist_ok=True)
    source = loaded.source
    if source.kind == "hf" and source.path is not None and (Path(source.path) / "config.json").is_file():
        config = json.loads((Path(source.path) / "config.json").read_text())
    else:
        eot = loaded.tokenizer.piece_to_id("<end_of_turn>")
        config = hf_config(loaded.config, dtype, eot, loaded.family)
    config["torch_dtype"] = dtype
    config.pop("dtype", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


@contextlib.contextmanager
def _keep_cpu_weights(active: bool):
    """While vLLM builds the engine: every CPU linear layer keeps its weight beside its packed copy."""
    if not active:
        yield
        return
    from vllm.model_executor.layers import utils

    original = utils.dispatch_cpu_unquantized_gemm
    utils.dispatch_cpu_unquantized_gemm = lambda layer, remove_weight: original(layer, False)
    try:
        yield
    finally:
        utils.dispatch_cpu_unquantized_gemm = original


def _load_and_redispatch(model, *, weights: dict) -> None:
    """In the worker (CPU): load `weights` in place with the model's own loaders (q, k, v into
    `qkv_proj`, ...), then rebuild the packed matmul of every linear layer whose weight was loaded."""
    import torch
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    loaded = model.load_weights(iter(weights.items())) or set()
    params = dict(model.named_parameters(remove_duplicate=False))
    storage = {params[name].data_ptr() for name in loaded if name in params}  # tied lm_head shares embed's
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if hasattr(module, "cpu_linear") and isinstance(weight, torch.Tensor) and weight.ndim == 2 \
                and weight.data_ptr() in storage:
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)


def _rss_bytes() -> int:
    """Resident memory now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_class():
    """The BaseRollout subclass (built lazily: importing this module must not import Tunix)."""
    from tunix.generate import utils as tunix_utils
    from tunix.rl.rollout import base_rollout

    class CotgenVllmRollout(base_rollout.BaseRollout):
        def __init__(self, rollout_actor, tokenizer, mesh, rollout_config, *, engine: EngineSpec):
            from cotgen.engines.vllm_backend import cpu_engine_args, set_environment

            self.actor, self.tokenizer, self.mesh, self.spec = rollout_actor, tokenizer, None, engine
            del mesh  # vLLM places itself; the cluster keeps the actor's mesh for the rollout role
            set_environment()
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # weights pass by reference (GPU too)
            from vllm import LLM

            started = time.perf_counter()
            kwargs = dict(model=str(engine.folder), load_format="dummy", skip_tokenizer_init=True,
                          dtype=engine.dtype, seed=engine.seed, max_model_len=engine.max_model_len,
                          max_num_seqs=engine.max_num_seqs, enforce_eager=engine.enforce_eager,
                          enable_prefix_caching=True, logprobs_mode="processed_logprobs",
                          **cpu_engine_args(engine.max_model_len))
            if engine.kv_cache_bytes is not None:
                kwargs["kv_cache_memory_bytes"] = int(engine.kv_cache_bytes)
            if engine.gpu_memory_utilization is not None:
                kwargs["gpu_memory_utilization"] = engine.gpu_memory_utilization
            # CPU: vLLM hands each linear layer's weight to a packed matmul (oneDNN in float32; sgl-kernel's
            # packed bfloat16 GEMM on AVX512-BF16/AMX CPUs) that copies it and drops the weight, and its
            # layerwise reload then leaves the old copy in use (measured: float32 output unchanged; bfloat16 on
            # a Sapphire Rapids CPU still the dummy weights, 12 nats off). Kept weights (remove_weight=False)
            # are loaded in place and re-dispatched instead, in every dtype.
            self.direct = on_cpu()
            renderer = logging.getLogger("vllm.renderers.base")  # its chat-template warm-up needs the
            level = renderer.level                                # tokenizer, which this engine never loads
            renderer.setLevel(logging.ERROR)
            try:
                with _keep_cpu_weights(self.direct):
                    self.llm = LLM(**kwargs)
            finally:
                renderer.setLevel(level)
            self.startup_s = time.perf_counter() - started
            self.sync = WeightSync(rollout_actor, lora=engine.lora, dtype=engine.dtype)
            self.syncs: list[dict] = []
            self.update_params(None)  # the real weights, before any sampling
            log.info("vLLM rollout engine up in %.1f s (first weight sync %.1f s)", self.startup_s,
                     self.syncs[-1]["seconds"])

        # ------------------------------------------------------------------------------------ sampling
        def _tokenize(self, text: str) -> list[int]:
            ids = [self.tokenizer.bos_id(), *self.tokenizer.encode(text)]
            return self.tokenizer.dedup_bos_ids(ids)

        def _params(self, cfg, index: int):
            from vllm import SamplingParams

            greedy = (cfg.top_p is None and cfg.top_k is None) or not cfg.temperature
            seed = None
            if self.spec.seeding == "request" and not greedy and cfg.seed is not None:
                seed = (int(np.asarray(cfg.seed).ravel()[0]) + index) % (1 << 63)
            stops = list(cfg.eos_tokens) if cfg.eos_tokens else [self.tokenizer.eos_id()]
            return SamplingParams(
                n=1, temperature=0.0 if greedy else float(cfg.temperature),
                top_p=1.0 if greedy or cfg.top_p is None else float(cfg.top_p),
                top_k=0 if greedy or not cfg.top_k else int(cfg.top_k), seed=seed,
                max_tokens=int(cfg.max_tokens_to_generate), stop_token_ids=stops, detokenize=False,
                logprobs=0 if cfg.return_logprobs else None, skip_special_tokens=False)

        def generate(self, prompts, rollout_config, **kwargs):
            from vllm.inputs import TokensPrompt

            cfg = rollout_config
            ids = [self._tokenize(p) for p in prompts]
            width = int(cfg.max_prompt_length)
            longest = max(len(x) for x in ids)
            if longest > width:  # as Tunix's sampler: the next power of two
                width = tunix_utils.next_power_of_2(longest)
            requests = [TokensPrompt(prompt_token_ids=x) for x in ids]
            outs = self.llm.generate(requests, [self._params(cfg, i) for i in range(len(ids))], use_tqdm=False)
            stops = set(cfg.eos_tokens or [self.tokenizer.eos_id()])
            tokens, logprobs = [], []
            for out in outs:
                comp = out.outputs[0]
                toks = list(comp.token_ids)
                end = next((j for j, t in enumerate(toks) if t in stops), len(toks))
                tokens.append(np.asarray(toks[:end], dtype=np.int32))
                if cfg.return_logprobs:
                    logprobs.append(np.asarray([step[t].logprob for t, step in
                                                zip(toks[:end], comp.logprobs or [])], dtype=np.float32))
            padded = np.array([tunix_utils.pad_to_length(np.asarray(x, dtype=np.int32), target_length=width,
                                                         pad_value=self.pad_id(), left=True) for x in ids])
            text = [self.tokenizer.decode(t.tolist()) for t in tokens]
            return base_rollout.RolloutOutput(text=text, logits=None, tokens=tokens,
                                              left_padded_prompt_tokens=padded,
                                              logprobs=logprobs if cfg.return_logprobs else None)

        def get_per_token_logps(self, prompt_tokens, completion_tokens):
            from flax import nnx
            from tunix.rl import common

            graphdef, state = nnx.split(self.actor)
            return common.compute_per_token_logps(graphdef, state, prompt_tokens=prompt_tokens,
                                                  completion_tokens=completion_tokens, pad_id=self.pad_id(),
                                                  eos_id=self.eos_id(), stop_gradient=True, return_logits=False)

        def sequence_logps(self, prompt_tokens, completion_tokens) -> np.ndarray:
            """vLLM's log-probability of each completion token given everything before it ([B, C], 0 at pad):
            what Tunix's `compute_per_token_logps` gives for the actor, read from vLLM's prompt log-probs."""
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt

            pad = self.pad_id()
            prompt_tokens, completion_tokens = np.asarray(prompt_tokens), np.asarray(completion_tokens)
            rows, lengths = [], []
            for p, c in zip(prompt_tokens, completion_tokens):
                p, c = [int(t) for t in p if t != pad], [int(t) for t in c if t != pad]
                rows.append((p, c))
                lengths.append(len(p))
            params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False)
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=p + c) for p, c in rows], params,
                                     use_tqdm=False)
            result = np.zeros(completion_tokens.shape, dtype=np.float32)
            for i, ((p, c), out) in enumerate(zip(rows, outs)):
                for j, token in enumerate(c):
                    result[i, j] = out.prompt_logprobs[len(p) + j][token].logprob
            return result

        # ------------------------------------------------------------------------------------ weights
        def update_params(self, params, filter_types=None):
            """Push the actor's current weights into the engine (`params`, Tunix's filtered actor state, is
            the actor's own: the merge reads the actor directly, base and adapters)."""
            import jax

            started, rss = time.perf_counter(), _rss_bytes()
            with jax.transfer_guard("allow"):
                tensors = self.sync.tensors()
            converted = time.perf_counter()
            quiet = [logging.getLogger(n) for n in QUIET_DURING_SYNC]  # a partial (LoRA) sync is meant to be
            levels = [q.level for q in quiet]                          # partial: no per-layer warnings
            for q in quiet:
                q.setLevel(logging.ERROR)
            try:
                if self.direct:
                    self.llm.apply_model(functools.partial(_load_and_redispatch, weights=tensors))
                else:
                    self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(tensors.items())})
            finally:
                for q, level in zip(quiet, levels):
                    q.setLevel(level)
            self.llm.reset_prefix_cache()
            done = time.perf_counter()
            nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
            self.syncs.append({"seconds": done - started, "convert_s": converted - started,
                               "load_s": done - converted, "tensors": len(tensors), "bytes": nbytes,
                               "rss_growth_bytes": max(0, _rss_bytes() - rss)})

        def pad_id(self) -> int:
            return self.tokenizer.pad_id()

        def eos_id(self) -> int:
            return self.tokenizer.eos_id()

        def model(self):
            return None  # no nnx model of its own: Tunix then syncs the actor's weights after every update

        def close(self) -> None:
            self.llm = None

    return CotgenVllmRollout

