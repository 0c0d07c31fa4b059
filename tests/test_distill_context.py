"""Context distillation on the tiny Gemma 3: the teacher reads the traces' own prompts (`teacher_prompt`), its
rows land on the student's positions whatever the two prompts' lengths, offline and online; with the teacher's
prompt equal to the student's the loss is today's."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from cotgen import prompts
from cotgen.distill import align
from cotgen.distill.config import DistillConfig, LogitsConfig
from cotgen.errors import CotgenError

K = 8


def _question(k: int) -> str:
    return f"What is {k} + {2 * k + 3}?"


def _rows(n: int, teacher: str) -> list[dict]:
    """`teacher`: "fewshot" (prompts of several lengths, some None as a reference solution has), "same" (the
    student's own prompt) or "none" (no column)."""
    out = []
    for k in range(n):
        q = _question(k)
        row = {"prompt": prompts.student_prompt(q),
               "completion": prompts.student_target(f"{k} + {2 * k + 3} = {3 * k + 3}.", str(3 * k + 3))}
        if teacher == "fewshot":
            row["teacher_prompt"] = (None if k % 4 == 3 else
                                     prompts.teacher_prompt(q, style="few_shot", shots="gsm8k", k=1 + k % 3))
        elif teacher == "same":
            row["teacher_prompt"] = row["prompt"]
        out.append(row)
    return out


def _data(folder, n: int, teacher: str):
    folder.mkdir(parents=True)
    pl.DataFrame(_rows(n, teacher)).write_parquet(folder / "train.parquet")
    return folder


@pytest.fixture(scope="module")
def teacher():
    from cotgen.models.load import load

    return load("tiny:1")


@pytest.fixture(scope="module")
def fewshot(tmp_path_factory):
    return _data(tmp_path_factory.mktemp("ctx") / "fewshot", 8, "fewshot")


def _tokenized(folder, loaded, mode="trace", max_len=1024):
    from cotgen.models.tokenizer import END_OF_TURN
    from cotgen.train import data

    ex = data.read_examples(folder / "train.parquet")
    eot = loaded.tokenizer.piece_to_id(END_OF_TURN)
    tok = data.tokenize(ex, loaded.tokenizer, eot, max_len)
    return ex, tok, align.teacher_tokenized(ex, tok, loaded.tokenizer, mode), eot


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _forward(model, ids):
    import jax.numpy as jnp

    n = len(ids)
    out, _ = model(jnp.array([ids]), jnp.arange(n)[None], None, jnp.tril(jnp.ones((1, n, n), bool)))
    return _log_softmax(np.asarray(out[0], dtype=np.float64))


# ------------------------------------------------------------------------------------------- alignment, by hand
def test_teacher_sequences_carry_the_students_completion_tokens_exactly(fewshot, teacher):
    ex, tok, ttok, eot = _tokenized(fewshot, teacher)
    assert len(set(int(n) for n in ttok.n_prompt)) >= 3  # prompts of several lengths, some shorter than others
    for i in range(len(tok.ids)):
        s, t, n_ps, n_pt = tok.ids[i], ttok.ids[i], int(tok.n_prompt[i]), int(ttok.n_prompt[i])
        np.testing.assert_array_equal(t[n_pt:], s[n_ps:])
        if ex.teacher_prompts[i] is None:  # a reference solution: the student's own prompt
            np.testing.assert_array_equal(t, s)
    replaced = align.ends_replaced(tok, ttok, eot)
    assert replaced.tolist() == [p is not None for p in ex.teacher_prompts]


def test_gather_index_points_at_the_teacher_position_predicting_the_same_token(fewshot, teacher):
    from cotgen.train import data

    _, tok, ttok, eot = _tokenized(fewshot, teacher)
    rows = [[0, 3, 5], [1, 2], [7]]
    batch = data.make_batch(rows, tok, 3, 1024, 0)
    tbatch = data.make_batch(rows, ttok, 3, align.row_length([rows], ttok), 0)
    replaced = align.ends_replaced(tok, ttok, eot)
    index, end = align.gather_index(rows, tok, ttok, 3, 1024, replaced)
    counted = batch["loss_mask"][:, 1:] == 1  # position t counts where token t + 1 is a target
    b, t = np.nonzero(counted)
    assert len(b) > 0
    np.testing.assert_array_equal(tbatch["tokens"][b, index[b, t] + 1], batch["tokens"][b, t + 1])
    np.testing.assert_array_equal(tbatch["segments"][b, index[b, t]], batch["segments"][b, t])
    # the end rows are those predicting a replaced example's final <end_of_turn>
    eb, et = np.nonzero(end)
    assert (batch["tokens"][eb, et + 1] == eot).all() and len(eb) == sum(replaced[i] for r in rows for i in r)


def test_online_aligned_teacher_logits_equal_each_examples_own_forward_pass(fewshot, teacher):
    import jax.numpy as jnp

    from cotgen.distill import losses
    from cotgen.distill.trainer import aligned
    from cotgen.train import data, sft

    _, tok, ttok, eot = _tokenized(fewshot, teacher)
    rows = [[0, 1, 2], [4, 6]]
    batch = data.make_batch(rows, tok, 2, 1024, 0)
    tbatch = data.make_batch(rows, ttok, 2, align.row_length([rows], ttok), 0)
    replaced = align.ends_replaced(tok, ttok, eot)
    index, end = align.gather_index(rows, tok, ttok, 2, 1024, replaced)
    inputs = sft.model_inputs({k: jnp.asarray(v) for k, v in tbatch.items()})
    # the teacher decodes only the positions the student's positions 0..L-2 read (sft.predicted_logits)
    logits = sft.predicted_logits(teacher.model, inputs["input_tokens"], inputs["positions"],
                                  inputs["attention_mask"], losses.at_positions(jnp.asarray(index), None))
    got = _log_softmax(np.asarray(aligned(logits, losses.at_positions(jnp.asarray(end), None),
                                          jnp.asarray(batch["tokens"])[:, 1:]), dtype=np.float64))
    for r, row in enumerate(rows):
        off = 0
        for i in row:
            n_s, n_ps, n_pt = len(tok.ids[i]), int(tok.n_prompt[i]), int(ttok.n_prompt[i])
            want = _forward(teacher.model, ttok.ids[i])  # the teacher alone on its own sequence
            t = np.arange(n_ps - 1, n_s - 1)
            if replaced[i]:  # the final row: <end_of_turn> with certainty
                assert got[r, off + n_s - 2, eot] == pytest.approx(0.0, abs=1e-6)
                t = t[:-1]
            np.testing.assert_allclose(got[r, off + t], want[t - n_ps + n_pt], atol=2e-4)
            off += n_s


# ------------------------------------------------------------------------------------------- offline
def test_offline_rows_are_the_teachers_own_prompt_rows_at_the_students_positions(fewshot, teacher, tmp_path):
    from cotgen.distill import store
    from cotgen.distill.logits import run

    m = run(LogitsConfig(teacher="tiny:1", data=fewshot, out=tmp_path / "logits", top_k=K, backend="tunix",
                         max_len=1024, shard_examples=3, batch_tokens=1024))
    _, tok, ttok, eot = _tokenized(fewshot, teacher)
    assert m["teacher_prompt"] == "trace" and m["teacher_tokens"] == int(ttok.lengths.sum())
    assert m["tokens"] == int(tok.lengths.sum()) and m["ends_replaced"] == 6
    topk = store.TopK(tmp_path / "logits")
    for i in range(len(tok.ids)):
        tokens, ids, lps = topk.example(i)
        np.testing.assert_array_equal(tokens, tok.ids[i])  # stored: the student's tokens
        n_s, n_ps, n_pt = len(tok.ids[i]), int(tok.n_prompt[i]), int(ttok.n_prompt[i])
        want = _forward(teacher.model, ttok.ids[i])
        t = np.arange(n_ps - 1, n_s - 1)
        if i % 4 != 3:
            assert ids[n_s - 2, 0] == eot and lps[n_s - 2, 0] == 0.0 and (lps[n_s - 2, 1:] < -1e3).all()
            t = t[:-1]
        np.testing.assert_allclose(lps[t], np.sort(want[t - n_ps + n_pt], -1)[:, ::-1][:, :K], atol=3e-3)
        np.testing.assert_array_equal(ids[t, 0], want[t - n_ps + n_pt].argmax(-1))
        assert np.isfinite(lps).all()


def test_same_prompt_gives_todays_stored_rows(tmp_path, teacher):
    from cotgen.distill import store
    from cotgen.distill.logits import run

    same = _data(tmp_path / "same", 4, "same")
    common = dict(teacher="tiny:1", data=same, top_k=K, backend="tunix", max_len=256, batch_tokens=512)
    a = run(LogitsConfig(**common, out=tmp_path / "trace", teacher_prompt="trace"))
    b = run(LogitsConfig(**common, out=tmp_path / "student", teacher_prompt="student"))
    assert a["ends_replaced"] == 0 and a["teacher_tokens"] == b["teacher_tokens"]
    _, tok, _, _ = _tokenized(same, teacher, max_len=256)
    x, y = store.TopK(tmp_path / "trace"), store.TopK(tmp_path / "student")
    for i in range(4):
        start = int(tok.n_prompt[i]) - 1  # every row a loss reads
        np.testing.assert_array_equal(x.example(i)[1][start:], y.example(i)[1][start:])
        np.testing.assert_array_equal(x.example(i)[2][start:], y.example(i)[2][start:])


# ------------------------------------------------------------------------------------------- online, whole runs
def test_online_loss_with_the_students_own_prompt_as_teacher_prompt_is_todays(tmp_path):
    from cotgen.distill.run import run
    from cotgen.train import metrics

    same = _data(tmp_path / "same", 6, "same")
    losses = {}
    for mode in ("trace", "student"):
        cfg = DistillConfig(model="tiny", teacher="tiny:1", data=same, out=tmp_path / mode, steps=2, batch_size=2,
                            max_len=256, lr=3e-3, save_every=2, log_every=1, tensorboard=False, alpha=0.5,
                            teacher_prompt=mode)
        state = run(cfg)
        assert state["teacher_prompt"] == mode
        losses[mode] = [r["loss"] for r in metrics.read(cfg.out / "metrics.jsonl") if "loss" in r]
    assert len(losses["trace"]) == 2
    np.testing.assert_allclose(losses["trace"], losses["student"], rtol=1e-5)


def test_online_trace_prompts_train(fewshot, tmp_path):
    from cotgen.distill.run import run

    state = run(DistillConfig(model="tiny", teacher="tiny:1", data=fewshot, out=tmp_path / "run", steps=2,
                              batch_size=2, max_len=512, lr=3e-3, save_every=2, tensorboard=False,
                              teacher_prompt="auto"))
    assert state["teacher_prompt"] == "trace" and np.isfinite(state["last_loss"])


def test_trace_mode_needs_the_column(tmp_path, teacher):
    plain = _data(tmp_path / "plain", 2, "none")
    ex, tok, _, _ = _tokenized(plain, teacher, mode="student")
    assert align.teacher_tokenized(ex, tok, teacher.tokenizer, "auto") is None
    with pytest.raises(CotgenError, match="needs a teacher_prompt column"):
        align.teacher_tokenized(ex, tok, teacher.tokenizer, "trace")
