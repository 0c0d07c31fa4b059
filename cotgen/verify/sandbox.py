"""Run untrusted work in worker processes with hard per-item time and memory limits.

`WorkerPool(target, workers, timeout_s, memory_mb)` calls `target` ("module:function") on each item in
separate processes: `python -m cotgen.verify.sandbox TARGET ...`, talking pickles over two private pipes (not
multiprocessing's fork/forkserver/spawn, which would fork a threaded Polars process or re-run the caller's
`__main__`). A worker starts in about a second (importing sympy and math-verify). Each worker:

- caps its address space with `setrlimit(RLIMIT_AS)` at its start-up size + `memory_mb` (a runaway allocation
  raises MemoryError there, or kills the worker), and disables core files;
- disables process creation and file writing for Python code (`os.system`, `subprocess`, `os.exec*`,
  `open(..., "w")`, ...) after start-up: a second line of defence, the first being that no model text is ever
  handed to `eval` (see `symbolic.py`);
- returns ("ok", value), ("memory", None) or ("error", message) per item.

The parent waits at most `timeout_s` (+ `grace_s`) per item, then SIGKILLs the worker and starts a new one:
work stuck in C code or holding the GIL (`9**9**9**9`) is really stopped, not abandoned. Items get
("timeout", None); a worker that dies gets ("crash", exit code). `screen` rejects text no answer should
contain before it is sent at all.
"""

from __future__ import annotations

import builtins
import importlib
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

Outcome = tuple[str, Any]  # (status, value): ok | timeout | memory | crash | error

MAX_CHARS = 1000
MAX_DEPTH = 60
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\ufeff\ufffd]")
_PYTHON = re.compile(
    r"__|\b(?:import|lambda|exec|eval|compile|open|getattr|setattr|delattr|globals|locals|vars|"
    r"subprocess|system|popen|builtins|breakpoint|input|exit|quit)\b|[;`@]|\bos\s*\."
)


def screen(text: str) -> str | None:
    """Why `text` must not be parsed (None if it may): too long, control or invalid Unicode, Python-looking
    code, or brackets nested deeper than MAX_DEPTH."""
    if len(text) > MAX_CHARS:
        return f"longer than {MAX_CHARS} characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "invalid Unicode (lone surrogate)"
    if _CONTROL.search(text):
        return "control character"
    if _PYTHON.search(text):
        return "looks like Python code"
    depth = deepest = 0
    for c in text:
        if c in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in ")]}":
            depth -= 1
    if deepest > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH}"
    return None


def _resolve(target: str) -> Callable[[Any], Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _blocked(*_args, **_kwargs):
    raise PermissionError("blocked in the verifier sandbox")


def _harden() -> None:
    """Remove the obvious ways for Python code in this process to start programs or write files."""
    import shutil
    import subprocess

    for name in (
        "system",
        "popen",
        "fork",
        "forkpty",
        "kill",
        "killpg",
        "remove",
        "unlink",
        "rmdir",
        "rename",
        "replace",
        "truncate",
        "chmod",
        "chown",
        "symlink",
        "link",
        "mkdir",
        "makedirs",
        "posix_spawn",
        "posix_spawnp",
        "execv",
        "execve",
        "execl",
        "execle",
        "execlp",
        "execlpe",
        "execvp",
        "execvpe",
        "spawnv",
        "spawnve",
        "spawnl",
        "spawnle",
        "spawnlp",
        "spawnlpe",
    ):
        if hasattr(os, name):
            setattr(os, name, _blocked)
    subprocess.Popen = _blocked  # type: ignore[misc,assignment]
    shutil.rmtree = _blocked  # type: ignore[assignment]
    real_open = builtins.open

    def read_only_open(file, mode="r", *args, **kwargs):
        if any(c in str(mode) for c in "wax+"):
            raise PermissionError("writing files is blocked in the verifier sandbox")
        return real_open(file, mode, *args, **kwargs)

    builtins.open = read_only_open  # type: ignore[assignment]


def _vm_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _serve(target: str, memory_mb: int, rfd: int, wfd: int) -> None:
    """Worker main loop: limits, then one item in, one outcome out, until the pipe closes."""
    conn_in, conn_out = Connection(rfd, writable=False), Connection(wfd, readable=False)
    _resolve(target)  # import (and warm up) the target's module before the limits
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    limit = _vm_bytes() + memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _harden()
    fn = _resolve(target)  # after hardening: a target that is itself a blocked function is blocked too
    conn_out.send(("ready", os.getpid()))
    while True:
        try:
            item = conn_in.recv()
        except (EOFError, OSError):
            return
        try:
            out: Outcome = ("ok", fn(item))
        except MemoryError:
            out = ("memory", None)
        except Exception as err:  # noqa: BLE001 - anything the item triggers is that item's outcome
            out = ("error", f"{type(err).__name__}: {err}"[:200])
        try:
            conn_out.send(out)
        except MemoryError:
            conn_out.send(("memory", None))


class _Worker:
    def __init__(self, target: str, memory_mb: int):
        child_r, parent_w = os.pipe()
        parent_r, child_w = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        cmd = [
            sys.executable,
            "-m",
            "cotgen.verify.sandbox",
            target,
            str(memory_mb),
            str(child_r),
            str(child_w),
        ]
        self.proc = subprocess.Popen(
            cmd,
            pass_fds=(child_r, child_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        os.close(child_r)
        os.close(child_w)
        self.send_conn = Connection(parent_w, readable=False)
        self.conn = Connection(parent_r, writable=False)
        self.index: int | None = None
        self.deadline = 0.0

    def ready(self, timeout_s: float) -> None:
        if not self.conn.poll(timeout_s):
            self.kill()
            raise RuntimeError(f"verifier worker did not start within {timeout_s:.0f}s")
        try:
            self.conn.recv()
        except EOFError:
            raise RuntimeError(f"verifier worker exited at start-up (status {self.kill()})") from None

    def kill(self) -> int | None:
        self.proc.kill()
        self.proc.wait()
        self.conn.close()
        self.send_conn.close()
        return self.proc.returncode


class WorkerPool:
    """Call `target` on items in `workers` sandboxed processes; see the module docstring."""

    def __init__(
        self,
        target: str,
        *,
        workers: int = 1,
        timeout_s: float = 5.0,
        memory_mb: int = 1024,
        grace_s: float = 1.0,
        start_timeout_s: float = 120.0,
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.target, self.timeout_s, self.grace_s = target, timeout_s, grace_s
        self.memory_mb, self.start_timeout_s = memory_mb, start_timeout_s
        self.workers = [_Worker(target, memory_mb) for _ in range(workers)]  # start in parallel
        for worker in self.workers:
            worker.ready(start_timeout_s)
        self.restarts = 0

    def _start(self) -> _Worker:
        worker = _Worker(self.target, self.memory_mb)
        worker.ready(self.start_timeout_s)
        return worker

    def map(self, items: Sequence[Any]) -> list[Outcome]:
        """Outcomes in the order of `items`."""
        results: list[Outcome | None] = [None] * len(items)
        todo = iter(range(len(items)))
        pending = 0
        idle = list(self.workers)
        while True:
            while idle:
                index = next(todo, None)
                if index is None:
                    break
                worker = idle.pop()
                worker.index, worker.deadline = index, time.monotonic() + self.timeout_s + self.grace_s
                worker.send_conn.send(items[index])
                pending += 1
            if pending == 0:
                return results  # type: ignore[return-value]
            busy = [w for w in self.workers if w.index is not None]
            wait_s = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = set(wait([w.conn for w in busy], timeout=wait_s))
            now = time.monotonic()
            for i, worker in enumerate(self.workers):
                if worker.index is None:
                    continue
                if worker.conn in ready:
                    try:
                        results[worker.index] = worker.conn.recv()
                    except (EOFError, OSError):
                        results[worker.index] = ("crash", worker.kill())
                        worker = self._replace(i)
                elif now >= worker.deadline:
                    worker.kill()
                    results[worker.index] = ("timeout", None)
                    worker = self._replace(i)
                else:
                    continue
                worker.index = None
                pending -= 1
                idle.append(worker)

    def _replace(self, i: int) -> _Worker:
        self.restarts += 1
        self.workers[i] = self._start()
        return self.workers[i]

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
