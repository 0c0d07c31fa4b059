"""`cotgen rl` end to end: GRPO on the tiny model (checkpoints, resume, metrics, held-out evaluation), each
Tunix variant for one step, bad input refused before compute, a `cotgen train` run as the policy, and a slow
run of the real Gemma 3 270M with LoRA."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from cotgen.errors import CotgenError
from cotgen.runs import read_run_config
from cotgen.train import rewards
from cotgen.train.rl import run, step_seed
from cotgen.train.rl_config import RLConfig

TINY = dict(model="tiny", source="rg:basic_arithmetic", limit=40, num_generations=2, batch_size=2,
            max_tokens=8, eval_size=2, eval_every=1, save_every=1)


@pytest.fixture
def varied_format(monkeypatch):
    """The random tiny model never writes the format: score 1, 0, 1, 0, ... instead (Tunix lays a group's G
    completions side by side), so every group differs in reward and the policy gradient is not zero;
    correctness and length stay real."""
    monkeypatch.setattr(rewards, "strict_format", lambda cs: (np.arange(len(cs)) % 2 == 0).astype(float))


def lora_b_norm(model) -> float:
    from flax import nnx

    state = nnx.state(model, nnx.LoRAParam)
    return float(sum(np.abs(np.asarray(v[...])).sum()
                     for path, v in nnx.to_flat_state(state) if "lora_b" in str(path[-1])))


def rows(out, mode):
    from cotgen.train.metrics import read

    return sorted((r for r in read(out / "metrics.jsonl") if r["mode"] == mode), key=lambda r: r["step"])


def test_grpo_on_tiny_trains_checkpoints_and_resumes(tmp_path, varied_format):
    out = tmp_path / "rl"
    norms = []
    def watch(monitor, step):
        norms.append(lora_b_norm(monitor.cluster.actor_trainer.model))

    first = run(RLConfig(steps=1, out=out, **TINY), callbacks=[watch])
    assert first["final_step"] == 1 and first["resumed_from"] == 0 and first["status"] == "done"
    assert norms[0] > 0  # LoRA B starts at zero: the update moved it
    for name in ("config.toml", "run.json", "metrics.jsonl", "rewards.png", "checkpoints/actor/1"):
        assert (out / name).exists(), name
    assert read_run_config(out).steps == 1

    with pytest.raises(CotgenError, match="pass --resume"):
        run(RLConfig(steps=2, out=out, **TINY))
    with pytest.raises(CotgenError, match="num_generations"):
        run(RLConfig(steps=2, out=out, resume=True, **{**TINY, "num_generations": 3}))

    second = run(RLConfig(steps=2, out=out, resume=True, **TINY), callbacks=[watch])
    assert second["resumed_from"] == 1 and second["final_step"] == 2 and second["runs"] == 2
    assert norms[1] != norms[0]
    assert (out / "checkpoints/actor/2").is_dir()

    train = rows(out, "train")
    assert [r["step"] for r in train] == [1, 2]
    assert [r["seed"] for r in train] == [step_seed(0, 1), step_seed(0, 2)]  # fresh each step, same on resume
    for r in train:
        assert math.isfinite(r["actor/loss"]) and r["actor/grad_norm"] > 0
        assert r["groups/zero_advantage_frac"] == 0
        assert r["completions/tokens_mean"] <= 8 and 0 <= r["reward/correctness"] <= 1
        assert r["reward"] == pytest.approx(r["reward/correctness"] + 0.2 * r["reward/format"]
                                            + 0.1 * r["reward/length"])
        for phase in ("rollout", "ref_logps", "reward", "update", "step"):
            assert r[f"time/{phase}_s"] >= 0
    evals = rows(out, "eval")
    assert [r["step"] for r in evals] == [0, 1, 2]
    assert all(r["n"] == 2 and 0 <= r["accuracy"] <= 1 and 0 <= r["format_rate"] <= 1 for r in evals)
    state = json.loads((out / "run.json").read_text())
    assert set(state["step_time_s"]) == {"rollout", "ref_logps", "reward", "update", "step"}
    assert state["data"]["held_out"] == 2 and state["prompt_style"] == "plain"
    assert state["prompt_tokens"] % 64 == 0  # the longest prompt, rounded up (prompt_budget)

    from cotgen.runs import model_from_run  # what export needs: the trained adapters back from disk

    model, _, cfg, step = model_from_run(out)
    assert step == 2 and cfg.lora_rank == 16
    assert lora_b_norm(model) == pytest.approx(norms[-1])


VARIANTS = {  # what Tunix runs for each --algo
    "gspo": dict(loss_algo="gspo-token", advantage_estimator="grpo", beta=0.04, kl_loss_mode="low_var_kl"),
    "drgrpo": dict(loss_algo="grpo", advantage_estimator="drgrpo", loss_agg_mode="sequence-mean-token-scale"),
    "dapo": dict(algo_variant="dapo", beta=None, epsilon_high=0.28, overlong_buffer=None,
                 loss_agg_mode="token-mean"),
}


@pytest.mark.parametrize("algo", sorted(VARIANTS))
def test_each_variant_takes_a_step(tmp_path, varied_format, algo):
    seen = {}

    def check(monitor, step):
        seen.update({k: getattr(monitor.learner.algo_config, k) for k in VARIANTS[algo]})
        seen["reward_fns"] = [f.__name__ for f in monitor.learner.reward_manager.reward_fns]

    cfg = RLConfig(steps=1, out=tmp_path / algo, algo=algo, **{**TINY, "eval_size": 0, "max_tokens": 4})
    state = run(cfg, callbacks=[check])
    train = rows(tmp_path / algo, "train")
    assert state["final_step"] == 1 and len(train) == 1 and math.isfinite(train[0]["actor/loss"])
    # cotgen's three rewards and nothing else (no Tunix DAPO character-count shaping)
    assert seen == {**VARIANTS[algo], "reward_fns": ["correctness", "format", "length", "work"]}


def test_a_tokenizer_that_does_not_fit_the_model_is_refused_before_loading(tmp_path):
    from cotgen.models import tiny

    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(tiny.tokenizer_path(), folder / "tokenizer.model")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "gemma3_text", "num_hidden_layers": 2, "vocab_size": 256, "hidden_size": 64,
        "intermediate_size": 128, "num_attention_heads": 2, "head_dim": 32, "num_key_value_heads": 1}))
    with pytest.raises(CotgenError, match="do not belong together"):
        run(RLConfig(steps=1, out=tmp_path / "rl", **{**TINY, "model": str(folder)}))
    assert not (tmp_path / "rl" / "checkpoints").exists()


@pytest.mark.slow
def test_grpo_lora_on_gemma_3_270m(tmp_path, monkeypatch):
    """Two GRPO steps of the real 270M (LoRA rank 8) on reasoning-gym arithmetic with the strict reward the
    CLI defaults to (the answer read from <answer>...</answer> only, by the real verifier): rewards, KL,
    held-out accuracy, checkpoints and the step-time split are all written."""
    scored = []
    real = rewards.correctness

    def recorded(completions, golds, *, strict=True, verifier=None):  # the real reward, its calls kept
        got = real(completions, golds, strict=strict, verifier=verifier)
        scored.append((list(completions), strict, got))
        return got

    monkeypatch.setattr(rewards, "correctness", recorded)
    out = tmp_path / "rl"
    cfg = RLConfig(model="gemma-3-270m", source="rg:basic_arithmetic", limit=64, out=out, steps=2,
                   num_generations=2, batch_size=2, max_tokens=32, max_prompt_tokens=128, lora_rank=8,
                   eval_size=4, eval_every=2, save_every=1)
    assert cfg.strict_answer
    state = run(cfg)
    assert state["final_step"] == 2 and state["prompt_style"] == "plain"
    assert len(scored) >= 4 and all(strict for _, strict, _ in scored)  # 2 rollouts, 2 held-out passes
    for completions, _, got in scored:  # strict: no <answer> block, no credit, whatever the text says
        assert all(v == 0.0 for c, v in zip(completions, got) if "<answer>" not in c)
    logged = {round(float(np.mean(o)), 6) for _, _, o in scored}
    assert all(round(r["reward/correctness"], 6) in logged for r in rows(out, "train"))
    assert (out / "checkpoints/actor/2").is_dir() and (out / "rewards.png").is_file()
    train = rows(out, "train")
    assert [r["step"] for r in train] == [1, 2]
    assert all(math.isfinite(r["actor/loss"]) and math.isfinite(r["actor/kl"]) for r in train)
    assert [r["step"] for r in rows(out, "eval")] == [0, 2]
    assert all(v > 0 for v in state["step_time_s"].values())


def test_a_train_run_folder_is_a_policy_with_its_lora_merged(tmp_path):
    """`--model runs/x/sft`: the SFT run's latest checkpoint, adapters merged into the base, chat prompts."""
    import jax.numpy as jnp

    from cotgen.prompts import student_prompt, student_target
    from cotgen.runs import model_from_run
    from cotgen.train.config import TrainConfig
    from cotgen.train.rl import load_policy, prompt_style
    from cotgen.train.sft import run as sft_run

    data = tmp_path / "sft.jsonl"
    rows_ = [{"prompt": student_prompt(f"Calculate {a} + 1."),
              "completion": student_target(f"{a} + 1 = {a + 1}", str(a + 1))} for a in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows_))
    folder = tmp_path / "sft"
    sft_run(TrainConfig(model="tiny", data=data, out=folder, steps=2, lora_rank=4, lr=1e-2, batch_size=2,
                        max_len=512, tensorboard=False))
    assert prompt_style(RLConfig(model=str(folder))) == "chat"
    merged = load_policy(str(folder), dtype="float32", mesh=None).model
    lora_model, base, _, _ = model_from_run(folder)
    tokens = jnp.array([[2, 10, 20, 30, 40, 50]])
    positions = jnp.arange(6)[None]
    mask = jnp.tril(jnp.ones((6, 6), dtype=bool))[None]
    want, _ = lora_model(tokens, positions, None, mask)
    got, _ = merged(tokens, positions, None, mask)
    plain, _ = base.model(tokens, positions, None, mask)
    assert jnp.allclose(got, want, atol=1e-4)
    assert not jnp.allclose(got, plain, atol=1e-4)  # the SFT moved the weights, and the merge kept that


@pytest.mark.parametrize("spec", ["tiny", "tiny-gemma2"])
def test_decoding_the_tail_only_gives_the_same_log_probs_and_gradients(spec):
    """`decode_tail_only`: Tunix's per-token log-probs of the completion, and their gradient, are those of the
    full forward pass, for Gemma 3 and Gemma 2 (its final soft-cap applies after the decode)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from tunix.rl import common

    from cotgen.models.load import load
    from cotgen.train.rl import decode_tail_only

    model = load(spec).model
    rng = np.random.default_rng(0)
    prompt = jnp.asarray(rng.integers(3, 200, (2, 12)), jnp.int32).at[0, :3].set(0)  # left padding
    completion = jnp.asarray(rng.integers(3, 200, (2, 5)), jnp.int32).at[1, 3:].set(0)

    def logps(m):
        graphdef, state = nnx.split(m)

        def f(state):
            out = common.compute_per_token_logps(graphdef, state, prompt, completion, pad_id=0, eos_id=1,
                                                 stop_gradient=False)
            return out.sum(), out

        (_, out), grads = jax.value_and_grad(f, has_aux=True)(state)
        return np.asarray(out), [np.asarray(g) for g in jax.tree.leaves(grads)]

    full, full_grads = logps(model)
    assert decode_tail_only(model, 5 + 1)
    tail, tail_grads = logps(model)
    np.testing.assert_allclose(tail, full, rtol=1e-5, atol=1e-5)
    for a, b in zip(tail_grads, full_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    tokens = jnp.concatenate([prompt, completion], axis=1)
    logits, _ = nnx.merge(*nnx.split(model))(tokens, positions=jnp.broadcast_to(jnp.arange(17), (2, 17)),
                                             cache=None, attention_mask=jnp.ones((2, 17, 17), bool))
    assert logits.shape[:2] == (2, 6)  # copies merged from the graph decode the tail too
    base = type(model.embedder).__mro__[1]
    assert decode_tail_only(model, 6) and type(model.embedder).__mro__[1] is base  # applied once, not stacked
