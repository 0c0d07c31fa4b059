"""LoRA SFT of the real Gemma 3 270M for a few steps, then a merged safetensors export that reloads to the same
logits (slow: about a minute and a half on 2 CPU cores)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cotgen import prompts


@pytest.mark.slow
def test_lora_sft_of_the_270m_then_merged_export(embedded_folder, gsm8k_rows, tmp_path):
    import jax.numpy as jnp

    from cotgen.models.load import load
    from cotgen.train.config import TrainConfig
    from cotgen.train.export import export
    from cotgen.train.sft import model_from_run, run

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in gsm8k_rows(4)))
    out = tmp_path / "sft"
    state = run(TrainConfig(model="gemma-3-270m", data=train, out=out, lora_rank=8, steps=3, batch_size=2,
                            max_len=192, lr=1e-3, tensorboard=False))
    assert state["examples"]["truncated"] == 0 and state["final_step"] == 3
    assert np.isfinite(state["last_loss"]) and state["last_loss"] < state["first_loss"]

    model, loaded, _, _ = model_from_run(out, quantize=False)
    ids = loaded.tokenizer.encode(prompts.student_prompt("What is 6 * 7?"), add_bos=True)
    n = len(ids)
    args = (jnp.array([ids]), jnp.arange(n)[None], None, jnp.tril(jnp.ones((1, n, n), bool)))
    want = np.asarray(model(*args)[0][0])
    export(out, "safetensors", tmp_path / "hf")
    del model, loaded
    got = np.asarray(load(str(tmp_path / "hf")).model(*args)[0][0])
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-3)
