"""`cotgen distill` on the tiny Gemma 3: losses, the top-k store, the vocabulary guard, both producers' format,
online and offline training, resume, export hand-off and bad input."""

from __future__ import annotations

import functools
import json

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from cotgen import prompts
from cotgen.cli import main
from cotgen.distill import store
from cotgen.distill.config import DistillConfig, LogitsConfig
from cotgen.errors import CotgenError, InputError

K = 16


def _rows(n: int, offset: int = 0) -> list[dict]:
    return [{"prompt": prompts.student_prompt(f"What is {k} + {2 * k + 3}?"),
             "completion": prompts.student_target(f"{k} + {2 * k + 3} = {3 * k + 3}.", str(3 * k + 3))}
            for k in range(offset, offset + n)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kd-data") / "data"
    folder.mkdir()
    pl.DataFrame(_rows(12)).write_parquet(folder / "train.parquet")
    pl.DataFrame(_rows(4, offset=50)).write_parquet(folder / "validation.parquet")
    return folder


@pytest.fixture(scope="module")
def topk_dir(dataset, tmp_path_factory):
    from cotgen.distill.logits import run

    out = tmp_path_factory.mktemp("kd-logits") / "logits"
    run(LogitsConfig(teacher="tiny:1", data=dataset, out=out, top_k=K, backend="tunix", max_len=256,
                     shard_examples=5, batch_tokens=512))
    return out


def _cfg(dataset, out, **kw) -> DistillConfig:
    return DistillConfig(**{**dict(model="tiny", data=dataset, out=out, steps=6, batch_size=2, max_len=256,
                                   lr=3e-3, save_every=2, eval_every=3, log_every=3, tensorboard=False), **kw})


@pytest.fixture(scope="module")
def offline_run(dataset, topk_dir, tmp_path_factory):
    from cotgen.distill.run import run

    cfg = _cfg(dataset, tmp_path_factory.mktemp("kd-off") / "run", logits=topk_dir)
    return cfg, run(cfg)


@pytest.fixture(scope="module")
def online_run(dataset, tmp_path_factory):
    from cotgen.distill.run import run

    # alpha 1: pure KD (two random tiny models are both near uniform, so CE alone would pull the student away)
    cfg = _cfg(dataset, tmp_path_factory.mktemp("kd-on") / "run", teacher="tiny:1", tensorboard=True, alpha=1.0)
    return cfg, run(cfg)


def _forward(model, ids):
    import jax.numpy as jnp

    n = len(ids)
    out, _ = model(jnp.array([ids]), jnp.arange(n)[None], None, jnp.tril(jnp.ones((1, n, n), bool)))
    return np.asarray(out[0], dtype=np.float64)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


# ---------------------------------------------------------------------------------------------------- losses
def _batch(seed=0, b=2, length=12, v=40):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, v, (b, length)).astype(np.int32)
    mask = np.zeros((b, length), np.int32)
    mask[0, 5:10] = 1
    mask[1, 3:12] = 1
    return rng.normal(size=(b, length, v)) * 2, rng.normal(size=(b, length, v)) * 2, tokens, mask


def _cut(a):
    """(B, L, ...) per-position values -> positions 0..L-2, where the losses read them without `select`."""
    import jax.numpy as jnp

    return jnp.asarray(a[:, :-1])


def test_topk_kl_with_the_whole_vocabulary_is_the_full_kl_and_both_count_completion_tokens_only():
    import jax.numpy as jnp

    from cotgen.distill import losses
    from cotgen.train.sft import loss_fn

    s, t, tokens, mask = _batch()
    cut = _cut
    labels = losses.labels(jnp.asarray(tokens), jnp.asarray(mask))
    full, m_full = losses.kd_full(cut(s), cut(t), labels, temperature=2.0, alpha=0.3)
    order = np.argsort(-t, axis=-1)
    lp = np.take_along_axis(_log_softmax(t), order, -1)
    top, m_top = losses.kd_topk(cut(s), cut(order), cut(lp), labels, temperature=2.0,
                                alpha=0.3)
    assert float(top) == pytest.approx(float(full), rel=1e-5)
    assert float(m_top["distill/topk_mass"]) == pytest.approx(1.0, rel=1e-5)
    # by hand: KL over positions t with mask[t + 1], mean over them
    p, q = _log_softmax(t / 2), _log_softmax(s / 2)
    kl = (np.exp(p) * (p - q)).sum(-1)[:, :-1]
    want = (kl * mask[:, 1:]).sum() / mask[:, 1:].sum()
    assert float(m_full["distill/kl"]) == pytest.approx(want, rel=1e-5)
    # prompt and padding positions do not matter
    s2, t2 = s.copy(), t.copy()
    s2[0, :4] += 50
    t2[1, :2] -= 30
    again, _ = losses.kd_full(cut(s2), cut(t2), labels, temperature=2.0, alpha=0.3)
    assert float(again) == pytest.approx(float(full), rel=1e-6)
    # alpha 0 is cotgen train's loss
    ce, _ = losses.kd_full(cut(s), cut(t), labels, temperature=2.0, alpha=0.0)

    class Model:
        def __call__(self, *a):
            return jnp.asarray(s), None

    sft = loss_fn(Model(), jnp.asarray(tokens), jnp.asarray(mask), None, None)
    assert float(ce) == pytest.approx(float(sft), rel=1e-6)
    # the batch's selected positions (cotgen.train.data) give the same losses from (B, K) rows
    width = int(mask[:, 1:].sum(1).max()) + 3
    select = np.zeros((len(mask), width), np.int32)
    keep = np.zeros_like(select)
    for r in range(len(mask)):
        at = np.flatnonzero(mask[r, 1:])
        select[r, :len(at)], keep[r, :len(at)] = at, 1
    sel = jnp.asarray(select)
    picked = losses.labels(jnp.asarray(tokens), jnp.asarray(mask), sel, jnp.asarray(keep),
                           jnp.asarray(np.take_along_axis(tokens, select + 1, 1)))
    at = functools.partial(losses.at_positions, select=sel)
    full_sel, _ = losses.kd_full(at(jnp.asarray(s)), at(jnp.asarray(t)), picked, temperature=2.0, alpha=0.3)
    top_sel, _ = losses.kd_topk(at(jnp.asarray(s)), at(jnp.asarray(order)), at(jnp.asarray(lp)), picked,
                                temperature=2.0, alpha=0.3)
    assert float(full_sel) == pytest.approx(float(full), rel=1e-6)
    assert float(top_sel) == pytest.approx(float(top), rel=1e-6)


def test_topk_kl_renormalises_the_teacher_and_penalises_student_mass_elsewhere():
    import jax.numpy as jnp

    from cotgen.distill import losses

    s, t, tokens, mask = _batch(seed=1)
    cut = _cut
    labels = losses.labels(jnp.asarray(tokens), jnp.asarray(mask))
    order = np.argsort(-t, axis=-1)[..., :5]
    lp = np.take_along_axis(_log_softmax(t), order, -1)
    _, m = losses.kd_topk(cut(s), cut(order), cut(lp), labels, temperature=1.0,
                          alpha=1.0)
    p = _log_softmax(lp)
    q_full = _log_softmax(s)
    q = np.take_along_axis(q_full, order, -1)
    kl = (np.exp(p) * (p - q)).sum(-1)[:, :-1]
    assert float(m["distill/kl"]) == pytest.approx((kl * mask[:, 1:]).sum() / mask[:, 1:].sum(), rel=1e-5)
    # a student with all its mass on the teacher's top 5 in the teacher's proportions: zero
    perfect = np.full_like(s, -1e4)
    np.put_along_axis(perfect, order, p, -1)
    _, m0 = losses.kd_topk(cut(perfect), cut(order), cut(lp), labels, temperature=1.0,
                           alpha=1.0)
    assert float(m0["distill/kl"]) == pytest.approx(0.0, abs=1e-5)


# ---------------------------------------------------------------------------------------------------- vocab
def test_vocabulary_guard():
    from cotgen.distill.vocab import shared_vocab

    assert shared_vocab("t", "h", 262_144, "s", "h", 262_144) == 262_144
    assert shared_vocab("gemma-3-4b", "h", 262_208, "gemma-3-1b", "h", 262_144) == 262_144
    with pytest.raises(CotgenError, match="teacher big and student small use different tokenizers"):
        shared_vocab("big", "h1", 262_144, "small", "h2", 262_144)
    with pytest.raises(CotgenError, match="teacher big has 256000 embedding rows and student small has 262144"):
        shared_vocab("big", "h", 256_000, "small", "h", 262_144)


def test_tokenizer_hash_tells_tokenizers_apart(tmp_path):
    from cotgen.distill.vocab import tokenizer_hash
    from cotgen.models.tiny import tokenizer_path
    from cotgen.models.tokenizer import Tokenizer

    a = Tokenizer.from_file(tokenizer_path())
    assert tokenizer_hash(a) == tokenizer_hash(Tokenizer.from_file(tokenizer_path()))

    class Shifted:
        vocab_size = a.vocab_size
        pad_id, eos_id, bos_id = a.pad_id, a.eos_id, a.bos_id

        def decode(self, ids):
            return a.decode([(ids[0] + 1) % self.vocab_size])

    assert tokenizer_hash(Shifted()) != tokenizer_hash(a)


# ---------------------------------------------------------------------------------------------------- store
def test_store_round_trip_and_batch_layout(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 100, n).astype(np.int32) for n in (5, 3, 7)]
    ids = [rng.integers(0, 100, (len(s) - 1, 4)).astype(np.int32) for s in seqs]
    lps = [-rng.random((len(s) - 1, 4)).astype(np.float32) * 10 for s in seqs]
    size = store.write_shard(tmp_path / store.shard_name(0), seqs[:2], ids[:2], lps[:2])
    store.write_shard(tmp_path / store.shard_name(1), seqs[2:], ids[2:], lps[2:])
    assert size < 500
    (tmp_path / store.MANIFEST).write_text(json.dumps({
        "format": store.FORMAT, "top_k": 4, "shard_examples": 2,
        "shards": [{"file": store.shard_name(0), "first": 0, "count": 2},
                   {"file": store.shard_name(1), "first": 2, "count": 1}]}))
    topk = store.TopK(tmp_path)
    for i in range(3):
        tokens, top, lp = topk.example(i)
        np.testing.assert_array_equal(tokens, seqs[i])
        np.testing.assert_array_equal(top, ids[i])
        np.testing.assert_allclose(lp, lps[i], rtol=1e-3)  # float16
    # a packed row [2, 0] then [1]: rows laid out at each example's positions
    batch = store.batch_topk([[2, 0], [1]], np.array([5, 3, 7]), topk, batch_size=3, max_len=14)
    np.testing.assert_array_equal(batch["top_ids"][0, :6], ids[2])
    np.testing.assert_array_equal(batch["top_ids"][0, 7:11], ids[0])
    np.testing.assert_array_equal(batch["top_ids"][1, :2], ids[1])
    assert not batch["top_ids"][0, 6].any() and not batch["top_ids"][2].any()
    assert batch["top_logprobs"].dtype == np.float16


# ---------------------------------------------------------------------------------------------------- logits
def test_tunix_producer_stores_the_teachers_exact_top_k(dataset, topk_dir):
    from cotgen.distill.vocab import tokenizer_hash
    from cotgen.models.load import load
    from cotgen.models.tokenizer import END_OF_TURN
    from cotgen.train import data

    m = store.read_manifest(topk_dir)
    teacher = load("tiny:1")
    assert m["top_k"] == K and m["vocab"] == teacher.config.num_embed and m["examples"] == 12
    assert len(m["shards"]) == 3 and m["tokenizer_hash"] == tokenizer_hash(teacher.tokenizer)
    assert m["data_fingerprint"] == data.fingerprint(data.read_examples(dataset / "train.parquet"))
    # k rows of (4 id + 2 logprob) bytes per token, plus the token itself, plus headers
    assert 6 * K < m["bytes_per_token"] < 6 * K + 4 + 2 and m["payload_bytes_per_token"] < 6 * K + 4
    tok = data.tokenize(data.read_examples(dataset / "train.parquet"), teacher.tokenizer,
                        teacher.tokenizer.piece_to_id(END_OF_TURN), 256)
    topk = store.TopK(topk_dir)
    for i in (0, 7, 11):  # packed rows, several shards: each matches its own unpacked forward pass
        tokens, ids, lps = topk.example(i)
        np.testing.assert_array_equal(tokens, tok.ids[i])
        want = _log_softmax(_forward(teacher.model, tok.ids[i]))[:-1]
        order = np.argsort(-want, axis=-1)[:, :K]
        np.testing.assert_allclose(lps, np.take_along_axis(want, order, -1), atol=2e-3, rtol=1e-3)
        np.testing.assert_array_equal(np.sort(ids[:, :3], -1), np.sort(order[:, :3], -1))


def test_logits_output_folder_rules(dataset, topk_dir, tmp_path):
    from cotgen.distill.logits import run

    before = {p.name: p.stat().st_mtime for p in topk_dir.iterdir()}
    again = run(LogitsConfig(teacher="tiny:1", data=dataset, out=topk_dir, top_k=K, backend="tunix",
                             max_len=256, shard_examples=5, batch_tokens=512))
    assert again["examples"] == 12 and {p.name: p.stat().st_mtime for p in topk_dir.iterdir()} == before
    with pytest.raises(CotgenError, match=r"other options \(top_k: 16 -> 8\)"):
        run(LogitsConfig(teacher="tiny:1", data=dataset, out=topk_dir, top_k=8, backend="tunix", max_len=256))
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in _rows(12, offset=1)))
    with pytest.raises(CotgenError, match="logits of other data"):
        run(LogitsConfig(teacher="tiny:1", data=other, out=topk_dir, top_k=K, backend="tunix", max_len=256,
                         shard_examples=5, batch_tokens=512))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    with pytest.raises(CotgenError, match="not empty"):
        run(LogitsConfig(teacher="tiny:1", data=dataset, out=tmp_path / "x", backend="tunix"))


def test_interrupted_logits_continue_after_the_last_shard(dataset, topk_dir, tmp_path):
    import shutil

    from cotgen.distill.logits import run

    out = tmp_path / "logits"
    shutil.copytree(topk_dir, out)
    (out / store.MANIFEST).unlink()
    (out / store.shard_name(2)).unlink()
    kept = (out / store.shard_name(0)).stat().st_mtime
    m = run(LogitsConfig(teacher="tiny:1", data=dataset, out=out, top_k=K, backend="tunix", max_len=256,
                         shard_examples=5, batch_tokens=512))
    assert (out / store.shard_name(0)).stat().st_mtime == kept and m["examples"] == 12
    assert (out / store.shard_name(2)).read_bytes() == (topk_dir / store.shard_name(2)).read_bytes()


# ---------------------------------------------------------------------------------------------------- train
def _metrics(cfg):
    return [json.loads(x) for x in (cfg.out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("which", ["offline", "online"])
def test_distillation_trains_logs_kl_and_evaluates_nll(which, request):
    from cotgen.models.load import load
    from cotgen.models.lora import flat_params
    from cotgen.runs import model_from_run

    cfg, state = request.getfixturevalue(f"{which}_run")
    rows = _metrics(cfg)
    train = [r for r in rows if r["mode"] == "train"]
    evals = [r for r in rows if r["mode"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, 7)) and [r["step"] for r in evals] == [0, 3, 6]
    assert all(np.isfinite([r["loss"] for r in train])) and train[-1]["loss"] < train[0]["loss"]
    assert train[-1]["distill/kl"] < train[0]["distill/kl"]
    assert all({"distill/kl", "distill/ce", "lr", "tokens_per_s"} <= r.keys() for r in train)
    # the loss is the blend alpha * KL + (1 - alpha) * CE (T = 1)
    a = cfg.alpha
    assert train[0]["loss"] == pytest.approx(a * train[0]["distill/kl"] + (1 - a) * train[0]["distill/ce"],
                                             rel=1e-4)
    assert np.isfinite([r["loss"] for r in evals]).all()
    if which == "offline":  # with the SFT term, the held-out NLL of the completion falls
        assert evals[-1]["loss"] < evals[0]["loss"]
    assert state["status"] == "done" and state["mode"] == which and state["final_step"] == 6
    assert 'command = "distill"' in (cfg.out / "config.toml").read_text()
    assert (cfg.out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    model, loaded, restored_cfg, step = model_from_run(cfg.out)
    assert step == 6 and restored_cfg == cfg
    trained, base = flat_params(model), flat_params(load("tiny").model)
    assert all(not np.allclose(trained[k], base[k]) for k in base if "mlp" in k or "einsum" in k)


def test_online_metrics_reach_tensorboard_and_listeners_are_removed(online_run):
    from jax._src import monitoring

    cfg, _ = online_run
    names = " ".join(p.name for p in (cfg.out / "tensorboard").iterdir())
    assert "events" in names
    assert not any(getattr(fn, "__self__", None).__class__.__name__ in ("JsonlBackend", "TensorboardBackend")
                   for fn in monitoring.get_scalar_listeners())
    assert "distill/teacher_ce" in _metrics(cfg)[1]


def test_stopped_offline_run_resumes_to_the_same_weights(dataset, topk_dir, offline_run, tmp_path):
    from cotgen.distill.run import run
    from cotgen.models.lora import flat_params
    from cotgen.runs import model_from_run

    class Stop(Exception):
        pass

    def stop(trainer, step):
        if step == 5:
            trainer.checkpoint_manager._checkpoint_manager.wait_until_finished()
            raise Stop

    out = tmp_path / "run"
    with pytest.raises(Stop):
        run(_cfg(dataset, out, logits=topk_dir), callbacks=[stop])
    with pytest.raises(CotgenError, match="already holds a distillation run; pass --resume"):
        run(_cfg(dataset, out, logits=topk_dir))
    with pytest.raises(CotgenError, match=r"another config \(alpha: 0.5 -> 0.7\)"):
        run(_cfg(dataset, out, logits=topk_dir, alpha=0.7, resume=True))
    state = run(_cfg(dataset, out, logits=topk_dir, resume=True))
    assert state["resumed_from"] == 4 and state["final_step"] == 6
    assert [r["step"] for r in _metrics(_cfg(dataset, out, logits=topk_dir)) if r["mode"] == "train"] == \
        list(range(1, 7))
    resumed, straight = flat_params(model_from_run(out)[0]), flat_params(model_from_run(offline_run[0].out)[0])
    for key in straight:
        np.testing.assert_allclose(resumed[key], straight[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_lora_student_through_the_cli_and_export(dataset, topk_dir, tmp_path):
    out = tmp_path / "kd"
    result = CliRunner().invoke(main, [
        "distill", "train", "--student", "tiny", "--logits", str(topk_dir), "--data", str(dataset), "--out",
        str(out), "--lora-rank", "4", "--steps", "3", "--batch-size", "2", "--max-len", "256", "--lr", "1e-2",
        "--eval-every", "3", "--no-tensorboard", "--alpha", "0.8", "--temperature", "2"])
    assert result.exit_code == 0, result.output
    assert "offline KD of tiny from tiny:1: 3 steps" in result.output
    from cotgen.runs import model_from_run

    model, _, cfg, step = model_from_run(out)
    assert cfg.lora_rank == 4 and cfg.temperature == 2.0 and step == 3
    from cotgen.train.export import export

    export(out, "safetensors", tmp_path / "hf")
    assert (tmp_path / "hf" / "config.json").is_file()


# ---------------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_before_any_compute(dataset, topk_dir, tmp_path):
    from cotgen.distill.run import run

    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"prompt": ["a"], "answer": ["b"]}).write_parquet(bad)
    with pytest.raises(InputError, match="field 'completion': column is missing"):
        run(_cfg(bad, tmp_path / "o1", logits=topk_dir))
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in _rows(12, offset=3)))
    with pytest.raises(CotgenError, match="was made for other data"):
        run(_cfg(other, tmp_path / "o2", logits=topk_dir))
    with pytest.raises(CotgenError, match="--max-len 512 exceeds the --max-len 256"):
        run(_cfg(dataset, tmp_path / "o3", logits=topk_dir, max_len=512))
    with pytest.raises(CotgenError, match="holds no finished `cotgen distill logits` output"):
        run(_cfg(dataset, tmp_path / "o4", logits=tmp_path))
    (tmp_path / "o5").mkdir()
    (tmp_path / "o5" / "config.toml").write_text('[cotgen]\ncommand = "train"\n')
    with pytest.raises(CotgenError, match="holds the output of `cotgen train`"):
        run(_cfg(dataset, tmp_path / "o5", logits=topk_dir))
    with pytest.raises(CotgenError, match="exactly one of --teacher"):
        DistillConfig(model="tiny", teacher="tiny:1", logits=topk_dir)
    with pytest.raises(CotgenError, match="--alpha"):
        DistillConfig(model="tiny", teacher="tiny:1", alpha=1.5)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_teacher_with_another_tokenizer_is_refused(dataset, topk_dir, tmp_path, monkeypatch):
    from cotgen.distill import vocab
    from cotgen.distill.run import run

    real = vocab.tokenizer_hash
    monkeypatch.setattr(vocab, "tokenizer_hash", lambda tok: real(tok) + "x")
    with pytest.raises(CotgenError, match=r"teacher tiny:1 \(logits in .*\) and student tiny use different"):
        run(_cfg(dataset, tmp_path / "o", logits=topk_dir))


def test_cli_errors_are_one_line(dataset, tmp_path):
    result = CliRunner().invoke(main, ["distill", "train", "--student", "tiny", "--data", str(dataset),
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "exactly one of --teacher" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["distill", "logits", "--teacher", "tiny", "--data", str(tmp_path / "nope"),
                                       "--out", str(tmp_path / "l")])
    assert result.exit_code == 2 and "nope: not found" in result.output
    for sub in ("logits", "train", "student"):
        result = CliRunner().invoke(main, ["distill", sub, "--help"])
        assert result.exit_code == 0 and "--out" in result.output


# ---------------------------------------------------------------------------------------------------- student
def test_truncated_student_keeps_the_first_layers_and_the_pattern(tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    from cotgen.distill.student import truncate
    from cotgen.models.tiny import tokenizer_path

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(12)]
    (teacher / "config.json").write_text(json.dumps({"model_type": "gemma3_text", "num_hidden_layers": 12,
                                                     "layer_types": types}))
    shutil.copy(tokenizer_path(), teacher / "tokenizer.model")
    save_file({"model.embed_tokens.weight": np.ones((4, 2), np.float32),
               **{f"model.layers.{i}.mlp.up_proj.weight": np.full((2, 2), i, np.float32) for i in range(12)},
               "model.norm.weight": np.zeros(2, np.float32)}, str(teacher / "model.safetensors"))
    out = truncate(teacher, 7, tmp_path / "student")
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 7 and config["layer_types"] == types[:7]
    kept = load_file(str(out / "model.safetensors"))
    assert sorted(kept) == sorted(["model.embed_tokens.weight", "model.norm.weight",
                                   *[f"model.layers.{i}.mlp.up_proj.weight" for i in range(7)]])
    assert (out / "tokenizer.model").is_file()
    with pytest.raises(CotgenError, match="--layers must be in 1..12"):
        truncate(teacher, 13, tmp_path / "s2")
    with pytest.raises(CotgenError, match="not empty"):
        truncate(teacher, 3, out)


def test_logits_dtype_auto_is_resolved_before_it_is_compared_or_written():
    from cotgen.distill.config import LogitsConfig, resolved_dtype
    from cotgen.engines.config import default_dtype

    assert resolved_dtype(LogitsConfig(backend="tunix")).dtype == "float32"
    assert resolved_dtype(LogitsConfig(backend="vllm")).dtype == default_dtype("vllm") in ("float32", "bfloat16")
    assert resolved_dtype(LogitsConfig(backend="vllm", dtype="float32")).dtype == "float32"
    with pytest.raises(CotgenError, match="--dtype must be auto, float32 or bfloat16"):
        LogitsConfig(dtype="float16")
