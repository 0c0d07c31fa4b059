"""The teacher's own prompt under the student's completion: context distillation (Snell et al., 2022).

A trace was sampled with one prompt (8 exemplars for a base teacher, its chat turn for an instruction-tuned one)
and is trained on with another (the student's plain prompt). The teacher should score the completion as it was
sampled, so it reads `<bos> teacher_prompt completion <end_of_turn>` while the student reads `<bos> prompt
completion <end_of_turn>`; the completion's tokens are the same on both sides (`cotgen.train.data.tokenize`
encodes prompt and completion apart), only shifted. With the same weights on both sides the student learns,
without exemplars, the distribution the model has with them.

Position t of a row predicts token t + 1. The student's completion starts at `n_ps` (its prompt's length,
<bos> included) and the teacher's at `n_pt`, so the teacher position that predicts the same token as student
position t (t >= n_ps - 1, every position a loss counts) is t - n_ps + n_pt. Positions before n_ps - 1 predict
the student's prompt, which no loss counts: they take the teacher's position 0 (online) or an inert row
(offline), never a value that changes a loss.

The end of the turn: the student's target ends with `<end_of_turn>`, which a teacher reading another format (a
base model's few-shot transcript, where "Question:" comes next) never predicts; distilling it there would teach
the student not to stop. So where the teacher's prompt differs from the student's and the example ends with
that token, the teacher's row for it is the data's own token with certainty (its KL term is then the cross
entropy of stopping). Where the prompts are the same, nothing is replaced.

- `teacher_tokenized`: the teacher's sequences for the student's tokenization (None when the teacher reads the
  student's own prompt, which is today's KD, bit for bit).
- `to_student_rows`: one example's stored rows, moved from teacher to student positions (offline).
- `gather_index`: per batch row, the teacher position each student position reads (online).
"""

from __future__ import annotations

import numpy as np

from cotgen.distill.config import TEACHER_PROMPTS as MODES
from cotgen.errors import CotgenError
from cotgen.train import data


def uses_trace(mode: str, examples: data.Examples) -> bool:
    """Whether the teacher reads the traces' own prompts: `trace` needs the column, `auto` uses it when there."""
    if mode not in MODES:
        raise CotgenError(f"--teacher-prompt must be one of {', '.join(MODES)}, got {mode!r}")
    has = examples.teacher_prompts is not None
    if mode == "trace" and not has:
        raise CotgenError(f"{examples.path}: --teacher-prompt trace needs a teacher_prompt column (written by "
                          "`cotgen filter`); use --teacher-prompt student")
    return mode != "student" and has


def teacher_tokenized(examples: data.Examples, tok: data.Tokenized, tokenizer, mode: str) -> data.Tokenized | None:
    """The teacher's view of every example in `tok`: its own prompt, then exactly the student's completion tokens
    (cut where the student's were). None when the teacher reads the student's prompt."""
    if not uses_trace(mode, examples):
        return None
    ids, n_prompt = [], []
    for seq, n_ps, index in zip(tok.ids, tok.n_prompt, tok.kept):
        prompt = examples.teacher_prompts[int(index)]
        p = seq[:n_ps] if prompt is None else np.asarray(tokenizer.encode(prompt, add_bos=True), dtype=np.int32)
        ids.append(np.concatenate([p, seq[n_ps:]]).astype(np.int32))
        n_prompt.append(len(p))
    return data.Tokenized(ids, np.asarray(n_prompt, dtype=np.int64), tok.n_truncated, tok.n_dropped, tok.kept)


def ends_replaced(tok: data.Tokenized, ttok: data.Tokenized | None, eot_id: int) -> np.ndarray:
    """(N,) bool: examples whose teacher row for the final <end_of_turn> is replaced (see the module doc)."""
    if ttok is None:
        return np.zeros(len(tok.ids), dtype=bool)
    return np.array([int(s[-1]) == eot_id and not np.array_equal(t[:n_pt], s[:n_ps])
                     for s, t, n_ps, n_pt in zip(tok.ids, ttok.ids, tok.n_prompt, ttok.n_prompt)], dtype=bool)


def to_student_rows(ids: np.ndarray, lps: np.ndarray, n_ps: int, n_pt: int, n_s: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_t - 1, k) teacher rows -> (n_s - 1, k) rows at the student's positions. Rows before n_ps - 1 (the
    student's prompt, never counted) are ids 0..k-1 at a uniform -log k: finite and inert."""
    k = ids.shape[1]
    out_ids = np.tile(np.arange(k, dtype=ids.dtype), (n_s - 1, 1))
    out_lps = np.full((n_s - 1, k), -np.log(k), dtype=lps.dtype)
    start = n_ps - 1
    out_ids[start:] = ids[n_pt - 1:n_pt - 1 + n_s - n_ps]
    out_lps[start:] = lps[n_pt - 1:n_pt - 1 + n_s - n_ps]
    return out_ids, out_lps


def certain_row(ids: np.ndarray, lps: np.ndarray, row: int, token: int) -> None:
    """Row `row` of stored top-k arrays becomes `token` with log-probability 0, the other k-1 ids at -1e4."""
    k = ids.shape[1]
    ids[row] = [token, *[t for t in range(k) if t != token][:k - 1]]
    lps[row] = [0.0, *[-1e4] * (k - 1)]


def row_length(plan_rows, ttok: data.Tokenized) -> int:
    """The teacher rows' length: the longest packed row of teacher sequences over the whole plan, rounded up to
    64 (one compiled shape for every step)."""
    longest = max((sum(len(ttok.ids[i]) for i in row) for batch in plan_rows for row in batch), default=1)
    return -(-longest // 64) * 64


def gather_index(rows: list[list[int]], tok: data.Tokenized, ttok: data.Tokenized, batch_size: int,
                 max_len: int, replaced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a packed batch ((batch_size, max_len) each): the position in the teacher's packed row (same examples,
    same order) whose logits predict the same token as each student position (int32), and the positions whose
    teacher row is the data's own <end_of_turn> (bool; `replaced` from `ends_replaced`)."""
    index = np.zeros((batch_size, max_len), dtype=np.int32)
    end = np.zeros((batch_size, max_len), dtype=bool)
    for r, row in enumerate(rows):
        off_s = off_t = 0
        for i in row:
            n_s, n_ps, n_pt = len(tok.ids[i]), int(tok.n_prompt[i]), int(ttok.n_prompt[i])
            t = np.arange(n_ps - 1, n_s)
            index[r, off_s + t] = off_t + t - n_ps + n_pt
            index[r, off_s:off_s + n_ps - 1] = off_t
            end[r, off_s + n_s - 2] = replaced[i]
            off_s += n_s
            off_t += len(ttok.ids[i])
    return index, end
