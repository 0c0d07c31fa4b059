"""Training metrics: a JSONL file and TensorBoard through Tunix's MetricsLogger, a step hook, the loss curve.

Tunix's MetricsLogger publishes every scalar through `jax.monitoring`, where JAX also publishes its own
(`/jax/...` compile and cache events), and in jax 0.10.2 its `close()` leaves the listeners registered. So the
backends here keep only the events they are told to (by default cotgen's `sft/` ones; `cotgen rl` keeps the
actor's), and `unregister` removes them once training ends.

metrics.jsonl holds rows of (mode, step) and scalars, which `read` merges into one row per (mode, step). For
`cotgen train` and `distill`: `loss`, `perplexity`, `grad_norm` (train), and from the step hook
`lr` (the schedule's value at that step), `tokens_per_s` (non-padding tokens / step wall time, the first step
including compilation), `step_time_s`, `real_tokens` and `loss_tokens`. Tunix's own `learning_rate` is
dropped: its trainer reads it from the optimiser one step late. Tunix writes a step's loss and grad norm
during the next step, so the step hook logs the loss itself and flushes the file at the end of every step: a
run killed after a checkpoint keeps that step's row (without its grad norm).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tunix.sft import hooks

from cotgen.io import write_text

PREFIX = "sft"
DROPPED = ("learning_rate",)
log = logging.getLogger("cotgen.train")


def _name(event: str) -> tuple[str, str] | None:
    """"sft/train/loss" -> ("train", "loss"); None for anything else (JAX's own events, other prefixes)."""
    prefix, _, rest = event.partition("/")
    mode, _, name = rest.partition("/")
    if prefix != PREFIX or not name or name in DROPPED:
        return None
    return mode, name


class JsonlBackend:
    """The metrics.jsonl writer of `cotgen train`, `distill` and `rl`, and a MetricsLogger backend: rows of one
    (mode, step) each. Values gather in pending rows, from `add` or from the Tunix events `events` keeps
    (`log_scalar`; `events(event)` -> (mode, column) or None), and are appended when `flush` is called (at the
    end of every step) or at `close`; `write` appends a row at once. Partial rows of one step are merged by
    `read`.

    One append handle is kept open between rows and flushed after each one (a row written when a step ends
    survives a kill); `close` (or leaving a `with` block) closes it, and a later row opens it again. It is
    reopened too when the path no longer names the open file (`truncate` replaces the file)."""

    def __init__(self, path: Path, events: Callable[[str], tuple[str, str] | None] = _name):
        self.path = Path(path)
        self.events = events
        self.pending: dict[tuple[str, int], dict] = {}
        self._file = None
        self.path.open("a", encoding="utf-8").close()

    def __enter__(self) -> "JsonlBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def log_scalar(self, event: str, value, **kwargs) -> None:
        named = self.events(event)
        if named is not None:
            mode, name = named
            self.add(mode, int(kwargs.get("step") or 0), {name: float(np.mean(value))})

    def add(self, mode: str, step: int, values: dict) -> None:
        self.pending.setdefault((mode, step), {}).update(values)

    def write(self, mode: str, step: int, values: dict) -> None:
        f = self._handle()
        f.write(json.dumps({"step": step, "mode": mode, "time": round(time.time(), 3), **values}) + "\n")
        f.flush()

    def _handle(self):
        """The open append handle of `path`, (re)opened when there is none or the path names another file."""
        if self._file is not None:
            try:
                if os.path.samestat(os.fstat(self._file.fileno()), os.stat(self.path)):
                    return self._file
            except FileNotFoundError:
                pass
            self._file.close()
        self._file = open(self.path, "a", encoding="utf-8")
        return self._file

    def flush(self, upto: int | None = None) -> None:
        """Append the pending rows (of steps <= upto; all when None) in step order, skipping empty ones."""
        for mode, step in sorted((k for k in self.pending if upto is None or k[1] <= upto), key=lambda k: k[1]):
            row = self.pending.pop((mode, step))
            if row:
                self.write(mode, step, row)

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorboardBackend:
    """metrax's TensorBoard writer, fed only the events `keep` accepts (by default cotgen's `sft/` ones)."""

    def __init__(self, log_dir: Path, keep: Callable[[str], bool] = lambda event: _name(event) is not None):
        from metrax import logging as metrax_logging

        self.keep = keep
        self._inner = metrax_logging.TensorboardBackend(log_dir=str(log_dir), flush_every_n_steps=1,
                                                         flush_interval_s=10.0)

    def log_scalar(self, event: str, value, **kwargs) -> None:
        if self.keep(event):
            self._inner.log_scalar(event, value, **kwargs)

    def close(self) -> None:
        self._inner.close()


def unregister(backends) -> None:
    """Remove the backends' jax.monitoring listeners (MetricsLogger.close leaves them in jax 0.10.2)."""
    import jax

    for backend in backends:
        try:
            jax.monitoring.unregister_scalar_listener(backend.log_scalar)
        except (AssertionError, ValueError):
            pass


def truncate(path: Path, step: int, *, keep_eval_at_step: bool = False) -> list[dict]:
    """Keep the rows up to `step`, but eval rows at `step` only with `keep_eval_at_step`; return the rows kept. A
    run resumed from the checkpoint of `step` redoes the steps after it; `cotgen train` evaluates again at
    `step` first, `cotgen rl` keeps an evaluation of that checkpoint's weights."""
    path = Path(path)
    if not path.is_file():
        return []
    lines, kept = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else None
        if row is not None and (row["step"] < step or (row["step"] == step and
                                                       (keep_eval_at_step or row["mode"] != "eval"))):
            lines.append(line)
            kept.append(row)
    write_text(path, "".join(r + "\n" for r in lines))
    return kept


class StepHook(hooks.TrainingHooks):
    """After each step: throughput, exact learning rate and token counts to the metrics; a log line every
    `log_every` steps; then any extra callbacks `fn(trainer, step)`."""

    def __init__(self, *, schedule, step_tokens: Callable[[int], tuple[int, int]],
                 step_time: Callable[[int], float | None], total: int, log_every: int, callbacks=(),
                 flush: Callable[[], None] | None = None):
        self.schedule, self.step_tokens, self.step_time = schedule, step_tokens, step_time
        self.total, self.log_every, self.callbacks, self.flush = total, log_every, tuple(callbacks), flush
        self._last = time.perf_counter()

    def on_train_start(self, train_ctx) -> None:
        self._last = time.perf_counter()

    def on_train_step_end(self, train_ctx, train_step, train_loss) -> None:
        from tunix.sft.metrics_logger import Mode

        now = time.perf_counter()
        dt = self.step_time(train_step)
        dt, self._last = (now - self._last if dt is None else dt), now
        real, loss_tokens = self.step_tokens(train_step - 1)
        values = {"loss": float(train_loss), "lr": float(self.schedule(train_step - 1)),
                  "tokens_per_s": real / max(dt, 1e-9), "step_time_s": dt, "real_tokens": real,
                  "loss_tokens": loss_tokens}
        for name, value in values.items():
            train_ctx.metrics_logger.log(PREFIX, name, value, Mode.TRAIN, train_step)
        if self.flush is not None:
            self.flush()
        if train_step % self.log_every == 0 or train_step == self.total or train_step == 1:
            log.info("step %d/%d  loss %.4f  lr %.3g  %.0f tok/s  %.2f s/step", train_step, self.total,
                     float(train_loss), values["lr"], values["tokens_per_s"], dt)
        for fn in self.callbacks:
            fn(train_ctx, train_step)

    def on_train_end(self, train_ctx) -> None:
        pass

    def on_train_step_start(self, train_ctx) -> None:
        pass

    def on_eval_step_start(self, train_ctx) -> None:
        pass

    def on_eval_step_end(self, train_ctx, eval_loss) -> None:
        pass


def read(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl, one per (mode, step) in order of first appearance (partial rows of the same
    step merged; later values win)."""
    path = Path(path)
    if not path.is_file():
        return []
    merged: dict[tuple[str, int], dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            merged.setdefault((row["mode"], row["step"]), {}).update(row)
    return list(merged.values())


def loss_summary(rows: list[dict]) -> dict:
    """First and last train and eval loss of merged metric rows (None where there are none), for run.json."""
    train = [r for r in rows if r["mode"] == "train" and "loss" in r]
    evals = [r for r in rows if r["mode"] == "eval" and "loss" in r]
    return {"first_loss": train[0]["loss"] if train else None, "last_loss": train[-1]["loss"] if train else None,
            "first_eval_loss": evals[0]["loss"] if evals else None,
            "last_eval_loss": evals[-1]["loss"] if evals else None}


def plot_loss(rows: list[dict], out: Path, title: str = "") -> Path | None:
    """Train (and eval) loss against step as a PNG; None when there is nothing to plot."""
    train = [(r["step"], r["loss"]) for r in rows if r["mode"] == "train" and "loss" in r]
    evals = [(r["step"], r["loss"]) for r in rows if r["mode"] == "eval" and "loss" in r]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cotgen.io import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation", markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (completion tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(out)
