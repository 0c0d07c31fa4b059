"""SFT data: read and check prompt/completion pairs, tokenize, order, pack and batch them (numpy only).

Each example is `<bos> prompt completion <end_of_turn>`, the prompt and completion tokenized separately (the
prompt exactly as the sampler sees it at inference). The loss covers the completion and the end-of-turn token
only. An example longer than `max_len` is cut at the end of its completion (it then has no end-of-turn); one
whose prompt alone fills `max_len` is dropped.

Order: epoch `e` visits the examples in `permutation(seed, e)`. Without packing every example is one row
padded to `max_len`. With packing, each window of `pack_window` consecutive examples (in that order) is packed
first-fit decreasing into rows of `max_len`, and the epoch's rows are shuffled by the same generator. Rows
flow into batches of `batch_size` across epoch boundaries. Everything is a function of (lengths, seed,
shapes), so a resumed run sees the same batches as an uninterrupted one.

A batch is a dict of `(B, L)` arrays: `tokens`, `loss_mask` (1 where the token is a training target),
`positions` (restarting at 0 for each packed example) and `segments` (1, 2, ... per example in the row; 0 for
padding). The trainer turns `segments` into a `(B, L, L)` causal mask with no attention across examples. And
`(B, K)` arrays naming the K positions whose next token is a target: `select` (position p, left-aligned),
`select_mask` (1 where real) and `targets` (the token at p + 1). The losses decode only those positions into
logits: a completion is a third of a row here, and the vocabulary matmul (262,144 columns for Gemma 3) is half of
a step's work. K is one number for a whole run (`target_width`), so the step compiles once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from cotgen.errors import InputError
from cotgen.io import read_parquet, read_parquet_schema

REQUIRED = ("prompt", "completion")
TEACHER_PROMPT = "teacher_prompt"  # optional
SUFFIXES = (".parquet", ".jsonl")


# ---------------------------------------------------------------------------------------------------- reading
@dataclasses.dataclass(frozen=True)
class Examples:
    path: Path
    prompts: list[str]
    completions: list[str]
    # the prompt each completion was sampled with (`teacher_prompt`, from `cotgen filter`), None where the data
    # has no such column; a None entry means the student's prompt (the source's own solutions)
    teacher_prompts: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.prompts)


def find_files(data: Path) -> tuple[Path, Path | None]:
    """(train file, validation file or None) for `--data`: a folder with train.parquet, or one file."""
    data = Path(data)
    if data.is_dir():
        train = data / "train.parquet"
        if not train.is_file():
            raise InputError(data, "no train.parquet in this folder (expected `cotgen filter` output)")
        val = data / "validation.parquet"
        return train, val if val.is_file() else None
    if not data.exists():
        raise InputError(data, "not found")
    if data.suffix not in SUFFIXES:
        raise InputError(data, f"expected a folder with train.parquet, or a {' or '.join(SUFFIXES)} file")
    return data, None


def read_examples(path: Path) -> Examples:
    """Prompt and completion strings of a Parquet or JSONL file; InputError names the file, line and
    field."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    import polars as pl

    schema = read_parquet_schema(path)
    for name in REQUIRED:
        if name not in schema:
            raise InputError(path, f"column is missing (found: {', '.join(schema) or 'none'})", field=name)
        if schema[name] != pl.String:
            raise InputError(path, f"has type {schema[name]}, expected String", field=name)
    teacher = TEACHER_PROMPT in schema
    if teacher and schema[TEACHER_PROMPT] not in (pl.String, pl.Null):
        raise InputError(path, f"has type {schema[TEACHER_PROMPT]}, expected String", field=TEACHER_PROMPT)
    df = read_parquet(path, columns=[*REQUIRED, *([TEACHER_PROMPT] if teacher else [])])
    for name in REQUIRED:
        bad = df.with_row_index().filter(pl.col(name).is_null() | (pl.col(name).str.strip_chars() == ""))
        if bad.height:
            raise InputError(path, f"{bad.height} empty or null values (first at row {bad['index'][0] + 1})",
                             field=name)
    if df.height == 0:
        raise InputError(path, "has no rows")
    return Examples(path, df["prompt"].to_list(), df["completion"].to_list(),
                    df[TEACHER_PROMPT].to_list() if teacher else None)


def _read_jsonl(path: Path) -> Examples:
    prompts, completions, teacher = [], [], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(path, f"not valid JSON ({err.msg})", line=line_no) from None
            if not isinstance(row, dict):
                raise InputError(path, "expected a JSON object", line=line_no)
            for name in REQUIRED:
                if name not in row:
                    raise InputError(path, "is missing", line=line_no, field=name)
                if not isinstance(row[name], str) or not row[name].strip():
                    raise InputError(path, "must be a non-empty string", line=line_no, field=name)
            value = row.get(TEACHER_PROMPT)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InputError(path, "must be a non-empty string or null", line=line_no, field=TEACHER_PROMPT)
            prompts.append(row["prompt"])
            completions.append(row["completion"])
            teacher.append(value)
    if not prompts:
        raise InputError(path, "has no rows")
    return Examples(path, prompts, completions, teacher if any(t is not None for t in teacher) else None)


def fingerprint(*sets: Examples | None) -> str:
    """sha256 of the examples' text, in order: a resumed run must train on the same data."""
    h = hashlib.sha256()
    for examples in sets:
        h.update(b"\x00set")
        if examples is None:
            continue
        for p, c in zip(examples.prompts, examples.completions):
            h.update(len(p).to_bytes(8, "little") + p.encode() + len(c).to_bytes(8, "little") + c.encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------- tokens
@dataclasses.dataclass(frozen=True)
class Tokenized:
    ids: list[np.ndarray]  # int32, <bos> prompt completion <end_of_turn>, cut to max_len
    n_prompt: np.ndarray  # (N,) prompt tokens per example, <bos> included
    n_truncated: int  # examples cut at max_len
    n_dropped: int  # examples whose prompt filled max_len (not in `ids`)
    kept: np.ndarray | None = None  # (N,) index of each example in the Examples it came from

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids], dtype=np.int64)


def tokenize(examples: Examples, tokenizer, eot_id: int, max_len: int) -> Tokenized:
    ids, n_prompt, kept, truncated, dropped = [], [], [], 0, 0
    for index, (prompt, completion) in enumerate(zip(examples.prompts, examples.completions)):
        p = tokenizer.encode(prompt, add_bos=True)
        if len(p) >= max_len:
            dropped += 1
            continue
        seq = [*p, *tokenizer.encode(completion), eot_id]
        if len(seq) > max_len:
            truncated += 1
            seq = seq[:max_len]
        ids.append(np.asarray(seq, dtype=np.int32))
        n_prompt.append(len(p))
        kept.append(index)
    if not ids:
        raise InputError(examples.path,
                         f"every prompt is at least --max-len {max_len} tokens: nothing to train on")
    return Tokenized(ids, np.asarray(n_prompt, dtype=np.int64), truncated, dropped, np.asarray(kept, dtype=np.int64))


# ---------------------------------------------------------------------------------------------------- order
def epoch_rows(lengths: np.ndarray, epoch: int, *, seed: int, max_len: int, packing: bool,
               window: int) -> list[list[int]]:
    """The rows (lists of example indices) of one epoch, in training order."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if not packing:
        return [[int(i)] for i in order]
    rows: list[list[int]] = []
    for start in range(0, len(order), window):
        rows += _first_fit_decreasing(order[start:start + window], lengths, max_len)
    return [rows[i] for i in rng.permutation(len(rows))]


def _first_fit_decreasing(indices: np.ndarray, lengths: np.ndarray, max_len: int) -> list[list[int]]:
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(indices.tolist(), key=lambda i: -lengths[i]):  # stable: ties keep the shuffled order
        n = int(lengths[i])
        slot = next((r for r, room in enumerate(free) if room >= n), None)
        if slot is None:
            rows.append([i])
            free.append(max_len - n)
        else:
            rows[slot].append(i)
            free[slot] -= n
    return rows


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every training step's rows, fixed before the first step."""

    batches: list[list[list[int]]]  # step -> rows -> example indices
    epochs: float  # epochs covered
    steps_per_epoch: float

    @property
    def steps(self) -> int:
        return len(self.batches)


def plan(lengths: np.ndarray, *, batch_size: int, max_len: int, packing: bool, seed: int, window: int,
         steps: int | None = None, epochs: float | None = None) -> Plan:
    """Batches for `steps` steps, else `epochs` epochs (default 1); rows run on across epoch boundaries."""
    if steps is None and epochs is None:
        epochs = 1.0
    kw = dict(seed=seed, max_len=max_len, packing=packing, window=window)
    rows: list[list[int]] = []
    first = epoch_rows(lengths, 0, **kw)
    if steps is not None:
        need = steps * batch_size
        epoch = 0
        while len(rows) < need:
            rows += first if epoch == 0 else epoch_rows(lengths, epoch, **kw)
            epoch += 1
        rows = rows[:need]
    else:
        whole, frac = int(epochs), epochs - int(epochs)
        for epoch in range(whole + (frac > 0)):
            more = first if epoch == 0 else epoch_rows(lengths, epoch, **kw)
            rows += more if epoch < whole else more[:max(1, round(frac * len(more)))]
    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    per_epoch = len(first) / batch_size
    return Plan(batches, len(rows) / len(first), per_epoch)


# ---------------------------------------------------------------------------------------------------- batches
def target_width(batches: Iterable[list[list[int]]], tok: Tokenized, max_len: int) -> int:
    """The most training targets a row of `batches` (step -> rows -> examples) holds, rounded up to 8 (at most
    `max_len` - 1): the width K of every batch's `select`."""
    most = max((sum(len(tok.ids[i]) - int(tok.n_prompt[i]) for i in row) for rows in batches for row in rows),
               default=1)
    return max(1, min(max_len - 1, -(-most // 8) * 8))


def make_batch(rows: list[list[int]], tok: Tokenized, batch_size: int, max_len: int,
               pad_id: int = 0, targets: int | None = None) -> dict[str, np.ndarray]:
    """A (batch_size, max_len) batch; rows beyond `rows` are all padding. `targets`: the width K of `select`
    (default: this batch's own `target_width`)."""
    shape = (batch_size, max_len)
    tokens = np.full(shape, pad_id, dtype=np.int32)
    loss_mask = np.zeros(shape, dtype=np.int32)
    positions = np.zeros(shape, dtype=np.int32)
    segments = np.zeros(shape, dtype=np.int32)
    for r, row in enumerate(rows):
        off = 0
        for s, i in enumerate(row, start=1):
            ids = tok.ids[i]
            n = len(ids)
            if off + n > max_len:
                raise ValueError(f"row {r} overflows max_len {max_len}")
            tokens[r, off:off + n] = ids
            loss_mask[r, off + tok.n_prompt[i]:off + n] = 1
            positions[r, off:off + n] = np.arange(n)
            segments[r, off:off + n] = s
            off += n
    width = target_width([rows], tok, max_len) if targets is None else targets
    select = np.zeros((batch_size, width), dtype=np.int32)
    select_mask = np.zeros((batch_size, width), dtype=np.int32)
    target = np.full((batch_size, width), pad_id, dtype=np.int32)
    for r in range(batch_size):
        at = np.flatnonzero(loss_mask[r, 1:])  # position p predicts the target at p + 1
        if len(at) > width:
            raise ValueError(f"row {r} has {len(at)} targets, more than the batch's width {width}")
        select[r, :len(at)], select_mask[r, :len(at)], target[r, :len(at)] = at, 1, tokens[r, at + 1]
    return {"tokens": tokens, "loss_mask": loss_mask, "positions": positions, "segments": segments,
            "select": select, "select_mask": select_mask, "targets": target}


def batch_tokens(rows: list[list[int]], tok: Tokenized) -> tuple[int, int]:
    """(real tokens, loss tokens) of a batch, from lengths alone."""
    real = sum(len(tok.ids[i]) for row in rows for i in row)
    prompt = sum(int(tok.n_prompt[i]) for row in rows for i in row)
    return real, real - prompt


def fill(p: Plan, tok: Tokenized, batch_size: int, max_len: int) -> dict[str, float]:
    """Share of the batch grid holding real tokens and loss tokens (mean over steps)."""
    real, loss = zip(*(batch_tokens(rows, tok) for rows in p.batches))
    grid = batch_size * max_len
    return {"real_token_fraction": float(np.mean(real)) / grid,
            "loss_token_fraction": float(np.mean(loss)) / grid}


def local_rows(rows: list[list[int]], batch_size: int,
               process: tuple[int, int]) -> tuple[list[list[int]], int]:
    """This process's share of a global batch, and its local batch size (multi-host: process i of n feeds rows
    [i*B/n, (i+1)*B/n); Tunix assembles the global array with `make_array_from_process_local_data`)."""
    index, count = process
    if count == 1:
        return rows, batch_size
    if batch_size % count:
        raise ValueError(f"--batch-size {batch_size} is not divisible by the {count} processes")
    local = batch_size // count
    return rows[index * local:(index + 1) * local], local


class Batches:
    """The training stream Tunix iterates: `start` cheap placeholders (the steps a resumed run skips), then
    batches."""

    def __init__(self, p: Plan, tok: Tokenized, batch_size: int, max_len: int, start: int = 0,
                 pad_id: int = 0, process: tuple[int, int] = (0, 1)):
        self.plan, self.tok, self.batch_size, self.max_len, self.start, self.pad_id = (
            p, tok, batch_size, max_len, start, pad_id)
        self.process = process
        self.targets = target_width(p.batches, tok, max_len)  # one width for the run: one compiled step
        self.fetched: dict[int, float] = {}  # step (0-based) -> when the trainer asked for its batch

    def __len__(self) -> int:
        return self.plan.steps

    def __iter__(self):
        for step, rows in enumerate(self.plan.batches):
            self.fetched[step] = time.perf_counter()
            # Tunix's PeftTrainer re-reads and discards the first `iter_steps` items after a restore.
            if step < self.start:
                yield {}
            else:
                rows, size = local_rows(rows, self.batch_size, self.process)
                yield make_batch(rows, self.tok, size, self.max_len, self.pad_id, self.targets)
        self.fetched[self.plan.steps] = time.perf_counter()

    def step_time(self, step: int) -> float | None:
        """Seconds between the trainer fetching batch `step` (1-based) and the next one: that step's wall time
        (the trainer fetches a batch, runs the step, then logs the previous one)."""
        start, end = self.fetched.get(step - 1), self.fetched.get(step)
        return None if start is None or end is None else end - start


def validation_batches(examples, tokenizer, eot: int, cfg, process: tuple[int, int] = (0, 1)):
    """The validation set of a TrainConfig-like `cfg` as eval batches (None without one)."""
    if examples is None:
        return None
    tok = tokenize(examples, tokenizer, eot, cfg.max_len)
    return eval_batches(tok, batch_size=cfg.batch_size, max_len=cfg.max_len, packing=cfg.packing,
                        window=cfg.pack_window, limit=cfg.eval_batches, pad_id=tokenizer.pad_id(), process=process)


def eval_batches(tok: Tokenized, *, batch_size: int, max_len: int, packing: bool, window: int,
                 limit: int | None, pad_id: int = 0,
                 process: tuple[int, int] = (0, 1)) -> list[dict[str, np.ndarray]]:
    """Validation batches in file order (packed like training when `packing`), at most `limit` of them."""
    order = np.arange(len(tok.ids))
    if packing:
        rows = [r for s in range(0, len(order), window)
                for r in _first_fit_decreasing(order[s:s + window], tok.lengths, max_len)]
    else:
        rows = [[int(i)] for i in order]
    n = math.ceil(len(rows) / batch_size) if limit is None else min(limit, math.ceil(len(rows) / batch_size))
    steps = [rows[b * batch_size:(b + 1) * batch_size] for b in range(n)]
    width = target_width(steps, tok, max_len)  # one width for every validation batch
    out = []
    for step in steps:
        local, size = local_rows(step, batch_size, process)
        out.append(make_batch(local, tok, size, max_len, pad_id, width))
    return out
