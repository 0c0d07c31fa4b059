"""Training metrics: a JSONL file and TensorBoard through Tunix's MetricsLogger, a step hook, the loss curve.

Tunix's MetricsLogger publishes every scalar through `jax.monitoring`, where JAX also publishes its own
(`/jax/...` compile and cache events), and in jax 0.10.2 its `close()` leaves the listeners registered. So the
backends here keep only cotgen's `sft/` events, and `unregister` removes them once training ends.

metrics.jsonl holds rows of (mode, step) and scalars, which `read` merges into one row per (mode, step): `loss`, `perplexity`, `grad_norm` (train), and from the step hook
`lr` (the schedule's value at that step), `tokens_per_s` (non-padding tokens / step wall time, the first step
including compilation), `step_time_s`, `real_tokens` and `loss_tokens`. Tunix's own `learning_rate` is
dropped: its trainer reads it from the optimiser one step late. Tunix writes a step's loss and grad norm
during the next step, so the step hook logs the loss itself and flushes the file at the end of every step: a
run killed after a checkpoint keeps that step's row (without its grad norm).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

from tunix.sft import hooks

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
    """Rows of one (mode, step) each, appended to `path` as their step completes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(self.path, "a", encoding="utf-8")
        self._row: dict | None = None

    def log_scalar(self, event: str, value, **kwargs) -> None:
        named = _name(event)
        if named is None:
            return
        mode, name = named
        step = int(kwargs.get("step") or 0)
        if self._row is not None and (self._row["mode"], self._row["step"]) != (mode, step):
            self._flush()
        if self._row is None:
            self._row = {"step": step, "mode": mode, "time": round(time.time(), 3)}
        self._row[name] = float(value)

    def flush(self) -> None:
        """Write the pending row now (the next scalar of the same step starts a new row; `read` merges)."""
        self._flush()

    def _flush(self) -> None:
        if self._row is not None:
            self._file.write(json.dumps(self._row) + "\n")
            self._file.flush()
            self._row = None

    def close(self) -> None:
        if not self._file.closed:
            self._flush()
            self._file.close()


class TensorboardBackend:
    """metrax's TensorBoard writer, fed only cotgen's events."""

    def __init__(self, log_dir: Path):
        from metrax import logging as metrax_logging

        self._inner = metrax_logging.TensorboardBackend(log_dir=str(log_dir), flush_every_n_steps=1,
                                                         flush_interval_s=10.0)

    def log_scalar(self, event: str, value, **kwargs) -> None:
        if _name(event) is not None:
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


def truncate(path: Path, step: int) -> None:
    """Keep the train rows up to `step` and the eval rows before it: a run resumed from the checkpoint of
    `step` redoes the steps after it, and evaluates again at `step` first."""
    path = Path(path)
    if not path.is_file():
        return
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else None
        if row is not None and (row["step"] < step or (row["step"] == step and row["mode"] != "eval")):
            rows.append(line)
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")


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
