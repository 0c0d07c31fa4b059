"""The dry-run's offline distillation checks: the logits stage's size, time and memory (estimate.logits,
logits_bytes), the disk check (check_storage) and the vocabulary check of a [distill] teacher. No weights, no
accelerator: shapes are dicts or Tunix presets as abstract arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cotgen.recipe import dryrun, estimate
from cotgen.recipe import plan as plan_mod

REPO = Path(__file__).resolve().parents[1]
GIB = 1 << 30
# Tunix's text-only presets as dryrun.shape() counts them (gemma3_4b_it, gemma3_12b_it)
G4B = {"preset": "gemma3_4b_it", "params": 3_880_099_328, "num_layers": 34, "embed_dim": 2560, "num_heads": 8,
       "num_kv_heads": 4, "head_dim": 256, "num_embed": 262_144}
G12B = {"preset": "gemma3_12b_it", "params": 11_765_788_416, "num_layers": 48, "embed_dim": 3840, "num_heads": 16,
        "num_kv_heads": 8, "head_dim": 256, "num_embed": 262_144}
TPU = estimate.profile({"profile": "tpu-v5e-8"})
GPU = estimate.profile({"profile": "gpu-a100-80gb"})


def _logits(p, shape, **kw):
    args = dict(tokens=16e6, examples=30e3, teacher_tokens=17e6, read_rows=13e6, top_k=64, backend="tunix",
                devices=1, dtype_bytes=2, batch_tokens=8192, longest=1600)
    return estimate.logits(p, shape, **{**args, **kw})


# ------------------------------------------------------------------------------------------------- estimate
def test_logits_bytes_is_the_store_format(tmp_path):
    from cotgen.distill import store

    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 1000, n).astype(np.int32) for n in (5, 9, 17)]
    k = 8
    ids = [rng.integers(0, 1000, (len(s) - 1, k)).astype(np.int32) for s in seqs]
    lps = [rng.standard_normal((len(s) - 1, k)).astype(np.float32) for s in seqs]
    size = store.write_shard(tmp_path / store.shard_name(0), seqs, ids, lps)
    tokens = sum(len(s) for s in seqs)
    payload = estimate.logits_bytes(tokens, len(seqs), k)
    assert payload == (tokens - 3) * k * 6 + tokens * 4 + 4 * 8
    assert payload <= size < payload + 1024  # the rest is the safetensors header


def test_logits_bytes_per_token_at_k64():
    assert estimate.logits_bytes(1e6, 0, 64) / 1e6 == pytest.approx(388, abs=0.01)  # 6k + 4


def test_a_4b_teacher_fits_one_v5e_chip_and_the_12b_does_not():
    four = _logits(TPU, G4B)
    assert four["fits"] and 7.2 < four["memory_per_device_gib"] < 16
    assert four["storage_bytes"] == estimate.logits_bytes(16e6, 30e3, 64)
    prefill = 2 * G4B["params"] * 17e6 / (197e12 * 0.4)
    assert four["seconds"] == pytest.approx(120 + prefill)
    twelve = _logits(TPU, G12B)
    assert not twelve["fits"] and "21.9 GiB of teacher weights on each of 1 device(s) of 16 GiB" in twelve["why"]
    # split over 8 chips (a mesh `cotgen distill logits` does not have yet) it would fit, 8x faster
    eight = _logits(TPU, G12B, devices=8)
    assert eight["fits"] and eight["seconds"] - 120 == pytest.approx((twelve["seconds"] - 120) / 8)


def test_vllm_logits_outside_its_share_bound_batch_tokens():
    ok = _logits(GPU, G12B, backend="vllm", batch_tokens=2048, longest=1600, extra_ids=64)
    assert ok["fits"], ok
    # two float32 (2048, 262,208) arrays: 4 GiB, beside 21.9 GiB of bf16 weights
    assert ok["memory_per_device_gib"] == pytest.approx((G12B["params"] * 2 + 2 * 2048 * 262_208 * 4) / GIB, abs=0.01)
    assert "reading 129 log-probs a position" in ok["assumes"]
    big = _logits(GPU, G12B, backend="vllm", batch_tokens=16384, longest=1600, extra_ids=64)
    assert not big["fits"] and "lower batch_tokens" in big["why"]


def test_cpu_logits_use_the_measured_rate():
    cpu = estimate.profile({})
    row = _logits(cpu, None, backend="vllm", teacher_tokens=452 * 100)
    assert row["seconds"] == pytest.approx(cpu["vllm_startup_s"] + 100)
    assert "fits" not in row and row["storage_bytes"] > 0


# -------------------------------------------------------------------------------------------------- storage
@pytest.mark.parametrize("disk, ok", [(None, True), (10, True), (5, False)])
def test_check_storage_against_disk_gib(disk, ok):
    class Stage:
        name = "distill-logits"
        settings = type("C", (), {"top_k": 64})()

    r = dryrun.Report()
    p = {**TPU, **({"disk_gib": disk} if disk is not None else {})}
    dryrun.check_storage(r, Stage(), {"storage_bytes": 6.0 * GIB, "tokens": 16.6e6}, p)
    assert r.failures == (0 if ok else 1), r.lines
    assert "~6.0 GiB" in r.lines[0] and (disk is None or f"of the target's {disk} GiB disk (disk_gib)" in r.lines[0])


# ------------------------------------------------------------------------------------------------ the dry-run
SMALL = """
[target]
profile = "tpu-v5e-8"

[problems]
task = "chain_sum"
config = {{ min_terms = 2, max_terms = 2, min_digits = 1, max_digits = 1 }}
train = 20
test = 10

[generate]
teacher = "gemma-3-270m"
n = 2
max_tokens = 32

[distill]
teacher = "{teacher}"
{logits}
[train]
model = "{student}"
lora_rank = 4
steps = 2
batch_size = 8
max_len = 128
mesh = "fsdp=8,tp=1"

[eval]
max_tokens = 32
data_parallel_size = 8

[eval.base]
prompt_style = "few_shot"

[eval.final]
prompt_style = "chat"
"""
OFFLINE = '\n[distill.logits]\nbackend = "tunix"\ntop_k = 8\nmax_len = 128\ndtype = "bfloat16"\n'


def _dry_run(tmp_path, teacher, student, logits=OFFLINE, **target):
    text = SMALL.format(teacher=teacher, student=student, logits=logits)
    for key, value in target.items():
        text = text.replace('profile = "tpu-v5e-8"\n', f'profile = "tpu-v5e-8"\n{key} = {value}\n')
    path = tmp_path / "kd.toml"
    path.write_text(text)
    lines: list[str] = []
    ok = dryrun.run(plan_mod.build(path, out=tmp_path / "run"), echo=lines.append)
    return ok, "\n".join(lines)


@pytest.mark.parametrize("teacher, student, logits", [
    ("hf:google/gemma-3-4b-it", "hf:google/gemma-2-2b-it", OFFLINE),  # offline: the logits stage's teacher
    ("hf:google/gemma-2-9b-it", "hf:google/gemma-3-1b-it", ""),  # online: the train stage's
], ids=["offline-gemma3-teacher", "online-gemma2-teacher"])
def test_a_teacher_of_another_vocabulary_fails_the_dry_run(tmp_path, embedded_folder, teacher, student, logits):
    ok, text = _dry_run(tmp_path, teacher, student, logits)
    assert not ok
    fail = [line for line in text.splitlines() if line.startswith("  [FAIL] distill.teacher")]
    assert len(fail) == 1, text
    assert f"distill.teacher {teacher}" in fail[0] and "cannot score the student's tokens" in fail[0]
    assert f"train.model {student}" in fail[0]


def test_the_logits_stage_is_sized_and_its_disk_checked(tmp_path, embedded_folder):
    ok, text = _dry_run(tmp_path, "hf:google/gemma-3-4b-it", "hf:google/gemma-3-1b-it")
    assert ok, text
    assert "[ok  ] distill.teacher hf:google/gemma-3-4b-it (gemma3) and train.model" in text
    assert "[warn] distill-logits: the teacher (tunix) on 1 of 8 device(s)" in text
    assert "[ok  ] distill-logits: max_len 128 vs train max_len 128" in text
    lines = text.splitlines()
    assert any(line.startswith("  [ok  ] distill-logits       ~") and "GiB per device" in line for line in lines)
    assert any(line.startswith("  [ok  ] distill-logits: ") and "M tokens stored at top_k 8" in line
               for line in lines)
    ok, text = _dry_run(tmp_path, "hf:google/gemma-3-4b-it", "hf:google/gemma-3-1b-it", disk_gib=1e-6)
    assert not ok and "[FAIL] distill-logits: " in text and "GiB disk (disk_gib)" in text


def test_vllm_tpu_is_refused_for_a_multimodal_teacher(tmp_path, embedded_folder):
    ok, text = _dry_run(tmp_path, "hf:google/gemma-3-4b-it", "hf:google/gemma-3-1b-it",
                        OFFLINE.replace('"tunix"', '"vllm"'))
    assert not ok
    assert "[FAIL] distill-logits: vllm-tpu refuses prompt_logprobs for multimodal models" in text


@pytest.mark.parametrize("recipe, backend, devices", [("gemma3-1b-tpu", "tunix", 8), ("gemma3-1b-gpu", "vllm", 1)])
def test_the_kd_recipes_size_their_logits_stage(tmp_path, embedded_folder, data_dir, recipe, backend, devices):
    echoed: list[str] = []
    ok = dryrun.run(plan_mod.build(REPO / "recipes" / f"{recipe}.toml", out=tmp_path / "run"), echo=echoed.append)
    text = "\n".join(echoed)
    lines = text.splitlines()
    assert ok, text
    assert f"distill-logits: the teacher ({backend}) on 1 of {devices} device(s)" in text
    assert any(line.startswith("  [ok  ] distill-logits       ~") and "GiB per device" in line for line in lines)
    assert any(line.startswith("  [ok  ] distill-logits: ") and "M tokens stored at top_k 64" in line
               for line in lines)
