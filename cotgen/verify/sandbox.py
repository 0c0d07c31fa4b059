"""Run untrusted work in worker processes with hard per-item time and memory limits.

`WorkerPool(target, workers, timeout_s, memory_mb)` calls `target` ("module:function") on each item in
separate processes: `python -m cotgen.verify.sandbox TARGET ...`, talking pickles over two private pipes (not
multiprocessing's fork/forkserver/spawn, which would fork a threaded Polars process or re-run the caller's
`__main__`). A worker starts in about a second (importing sympy and math-verify). Each worker:

- caps its address space with `setrlimit(RLIMIT_AS)` at its start-up size + `memory_mb` (a runaway allocation
  raises MemoryError there, or kills the worker); sets RLIMIT_CORE and RLIMIT_FSIZE to 0, RLIMIT_NPROC to 0
  (not enforced for root) and RLIMIT_NOFILE to its open files + 32;
- rebinds the Python ways to start programs or write files (`os.system`, `subprocess`, `open(..., "w")`, ...)
  to a function that refuses, then installs an audit hook (`sys.addaudithook`, which cannot be removed) that
  refuses, below any Python rebinding, process creation (`os.system`, `os.posix_spawn`, `os.exec*`, `os.fork`,
  `subprocess.Popen`), opens for writing, file removal, sockets, all of ctypes, and fresh imports of
  `_posixsubprocess`, `ctypes` and `socket`. All of this happens after the worker's own imports. It is the
  second barrier; the first is that no model text is ever handed to `eval` (see `symbolic.py`);
- returns ("ok", value), ("memory", None) or ("error", message) per item.

The parent waits at most `timeout_s` (+ `grace_s`) per item, then SIGKILLs the worker and starts a new one:
work stuck in C code or holding the GIL (`9**9**9**9`) is really stopped, not abandoned. Items get
("timeout", None); a worker that dies gets ("crash", exit code). `screen` rejects, before it is sent at all,
text no answer should contain and text whose cost explodes (deep bare brackets, large factorials, towers and
huge exponents). `workers` is at most MAX_WORKERS; time-outs must be finite and > 0 (CotgenError otherwise).
"""

from __future__ import annotations

import builtins
import importlib
import math
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from cotgen import MAX_WORKERS  # the one bound, shared with the typed configs (cotgen.config.LIMITS)
from cotgen.errors import CotgenError

Outcome = tuple[str, Any]  # (status, value): ok | timeout | memory | crash | error

MAX_CHARS = 1000
MAX_DEPTH = 60  # any brackets, command arguments included
MAX_BARE_DEPTH = 6  # bare groups: `((((1))))`; about 0.3 s at 6 levels, a time-out at 12
MAX_FACTORIAL_DIGITS = 5  # `99999!` takes 0.2 s
MAX_EXPONENT = 100_000  # `x^{100000}` takes 0.1 s; `9^{9^{9}}` and `10^{10^{10}}` never finish
MAX_POLY_POWER = 100  # `(x+1)^{100}` takes 0.2 s, `(x+1)^{1000}` times out

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\ufeff\ufffd]")
_PYTHON = re.compile(
    r"__|\b(?:import|lambda|exec|eval|compile|open|getattr|setattr|delattr|globals|locals|vars|"
    r"subprocess|system|popen|builtins|breakpoint|input|exit|quit)\b|[;`@]|\bos\s*\."
)


def _nesting(text: str) -> tuple[int, int]:
    """(deepest nesting of all brackets, deepest nesting of bare groups). A `{` that follows a command,
    `}`, `]`, `^` or `_` is an argument (`\\frac{1}{2}`, `x^{2}`); any other `(`, `[`, `{` or `\\{` is a bare
    group. math-verify's parser slows down about 1.4x per level of bare groups (12 levels: seconds), while
    arguments nest cheaply. One pass: the open bare groups are counted as they open and close."""
    stack: list[bool] = []  # True: a bare group
    deepest = bare = open_bare = 0
    prev = ""  # the last non-space character before this one
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
            c, i = text[i + 1], i + 1  # \{ \}: a set's braces, always bare
            is_bare = True
        else:
            is_bare = c in "([" or not (prev.isalpha() or prev in "}]^_")
        if c in "([{":
            stack.append(is_bare)
            open_bare += is_bare
            deepest = max(deepest, len(stack))
            bare = max(bare, open_bare)
        elif c in ")]}" and stack:
            open_bare -= stack.pop()
        if not c.isspace():
            prev = c
        i += 1
    return deepest, bare


_NUM_TOKEN = re.compile(r"\s*(\d+(?:\.\d*)?|\\cdot|\\times|\*\*|[-+*^{}()])")


def _magnitude(text: str) -> float | None:
    """An upper bound on |value| of a plain numeric expression (digits, + - * \\cdot \\times ^, braces,
    parentheses; powers right-associative), infinity beyond 10^6 for a power; None if `text` is not one."""
    tokens, pos = [], 0
    while pos < len(text):
        m = _NUM_TOKEN.match(text, pos)
        if m is None:
            return None if text[pos:].strip() else _parse_sum(tokens)
        tokens.append("^" if m.group(1) == "**" else m.group(1))
        pos = m.end()
    return _parse_sum(tokens)


def _parse_sum(tokens: list[str]) -> float | None:
    try:
        value, rest = _sum(tokens)
    except (IndexError, ValueError):
        return None
    except RecursionError:  # a very long chain of powers
        return math.inf
    return None if rest else value


def _sum(t: list[str]) -> tuple[float, list[str]]:
    value, t = _product(t)
    while t and t[0] in "+-":
        other, t = _product(t[1:])
        value += other  # magnitudes: |a - b| <= |a| + |b|
    return value, t


def _product(t: list[str]) -> tuple[float, list[str]]:
    value, t = _power(t)
    while t and t[0] in ("*", "\\cdot", "\\times"):
        other, t = _power(t[1:])
        value *= other
    return value, t


def _power(t: list[str]) -> tuple[float, list[str]]:
    if t[0] in "+-":
        t = t[1:]
    if t[0] in "({":
        value, t = _sum(t[1:])
        if not t or t[0] not in ")}":
            raise ValueError("unbalanced")
        t = t[1:]
    elif t[0][0].isdigit():
        value, t = float(t[0]), t[1:]
    else:
        raise ValueError(t[0])
    if t and t[0] == "^":
        exponent, t = _power(t[1:])
        if value > 1 and exponent * math.log10(value) > 6:
            return math.inf, t
        value = value**exponent if value > 1 else 1.0
    return value, t


def _exponent_at(text: str, i: int) -> tuple[str, int]:
    """The exponent after the `^` at `i`: a braced group, or a digit run with the rest of an unbraced chain
    (`10^10^10`: `10^10`), or one character; and the index after it."""
    j = i + 1
    while j < len(text) and text[j].isspace():
        j += 1
    if j < len(text) and text[j] == "{":
        depth, k = 0, j
        while k < len(text):
            depth += (text[k] == "{") - (text[k] == "}")
            if depth == 0:
                return text[j + 1 : k], k + 1
            k += 1
        return text[j + 1 :], len(text)
    m = re.compile(r"-?\d+(?:\s*\^\s*(?:\{[\d\s^{}]*\}|-?\d+))*").match(text, j)
    if m:
        return m.group(), m.end()
    return text[j : j + 1], j + 1


def _polynomial_before(text: str, i: int) -> bool:
    """Whether a parenthesised sum with a variable, such as `(x+1)`, ends just before index `i`."""
    j = len(text[:i].rstrip()) - 1
    if j < 0 or text[j] != ")":
        return False
    depth, k = 0, j
    while k >= 0:
        depth += (text[k] == ")") - (text[k] == "(")
        if depth == 0:
            group = text[k + 1 : j]
            return bool(re.search(r"[A-Za-z]", group) and re.search(r"[-+]", group))
        k -= 1
    return False


def _costly(text: str) -> str | None:
    """Why `text` would cost far more to check than its length suggests (None if it would not)."""
    deepest, bare = _nesting(text)
    if deepest > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH}"
    if bare > MAX_BARE_DEPTH:
        return f"bare brackets nested deeper than {MAX_BARE_DEPTH}"
    for m in re.finditer(r"(?<!\\)!", text):  # `\!` is LaTeX spacing, not a factorial
        before = text[: m.start()].rstrip()
        arg = re.search(r"(\d+)$|([A-Za-z])$|\(([\w\s+\-*]{1,20})\)$", before)
        digits = re.findall(r"\d+", arg.group()) if arg else []
        if arg is None or any(len(d) > MAX_FACTORIAL_DIGITS for d in digits):
            return "factorial of a large or compound argument"
    text = text.replace("**", "^")  # Python's power: screened like LaTeX's
    for m in re.finditer(r"\^", text):
        exponent, _ = _exponent_at(text, m.start())
        value = _magnitude(exponent)
        if value is not None and value > MAX_EXPONENT:
            return f"exponent above {MAX_EXPONENT}"
        if value is not None and value > MAX_POLY_POWER and _polynomial_before(text, m.start()):
            return f"power of a polynomial above {MAX_POLY_POWER}"
    return None


def screen(text: str) -> str | None:
    """Why `text` must not be parsed (None if it may): too long, control or invalid Unicode, Python-looking
    code, or costly: brackets nested deeper than MAX_DEPTH (bare groups: MAX_BARE_DEPTH), a factorial of more
    than a small integer, a variable or a short parenthesised sum (`99999!` is fine, `(10^{10})!` and `10!!`
    are not), an exponent above MAX_EXPONENT (towers such as `9^{9^{9}}` included) or a polynomial raised
    above MAX_POLY_POWER. Each of those cost a full worker time-out before this check."""
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
    return _costly(text)


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
    import _posixsubprocess

    subprocess.Popen = _blocked  # type: ignore[misc,assignment]
    _posixsubprocess.fork_exec = _blocked  # no audit event of its own
    subprocess._fork_exec = _blocked  # type: ignore[attr-defined]
    shutil.rmtree = _blocked  # type: ignore[assignment]
    real_open = builtins.open

    def read_only_open(file, mode="r", *args, **kwargs):
        if any(c in str(mode) for c in "wax+"):
            raise PermissionError("writing files is blocked in the verifier sandbox")
        return real_open(file, mode, *args, **kwargs)

    builtins.open = read_only_open  # type: ignore[assignment]


# Audit events the worker refuses once started (PEP 578). Blocking these in C, below any Python rebinding, is
# the second barrier; `_harden` is only the first, cheap one.
REFUSED_EVENTS = frozenset(
    {
        "os.system", "os.posix_spawn", "os.exec", "os.spawn", "os.fork", "os.forkpty", "os.kill",
        "os.killpg", "subprocess.Popen", "pty.spawn", "os.remove", "os.rename", "os.rmdir", "os.mkdir",
        "os.chmod", "os.chown", "os.link", "os.symlink", "os.truncate", "os.putenv", "os.unsetenv",
        "shutil.rmtree", "socket.__new__", "socket.bind", "socket.connect", "socket.getaddrinfo",
        "socket.sendto", "urllib.Request", "webbrowser.open", "mmap.__new__", "gc.get_objects",
        "gc.get_referrers", "gc.get_referents",  # these could dig up a function `_harden` rebound
    }
)  # fmt: skip
# Modules that may not be imported (afresh) once the worker runs: a fresh `_posixsubprocess` would bring back
# `fork_exec`, which raises no audit event of its own.
REFUSED_IMPORTS = frozenset({"_posixsubprocess", "ctypes", "_ctypes", "socket", "_socket", "mmap", "pty"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def _audit(event: str, args: tuple) -> None:
    """Refuse process creation, file writes, sockets and ctypes (which could undo the hook itself)."""
    if event == "open":
        mode, flags = (args[1], args[2]) if len(args) > 2 else (None, 0)
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        ):
            raise PermissionError(f"open for writing refused in the verifier sandbox: {args[0]!r}")
    elif event == "import" and args and args[0] in REFUSED_IMPORTS:
        raise PermissionError(f"importing {args[0]} refused in the verifier sandbox")
    elif event in REFUSED_EVENTS or event.startswith("ctypes."):
        raise PermissionError(f"{event} refused in the verifier sandbox")


def _limit(kind: int, value: int) -> None:
    """Lower a resource limit (soft and hard) where the platform allows it."""
    try:
        _soft, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        pass


def _lock_down(memory_mb: int) -> None:
    """Limits and the audit hook, after the worker's imports: no core files, a memory cap, no new processes
    (RLIMIT_NPROC; root ignores it, the hook does not), no file growth (RLIMIT_FSIZE=0, SIGXFSZ ignored so a
    write fails instead of killing the worker), few open files, no bytecode writes."""
    import signal

    sys.dont_write_bytecode = True
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    limit = _vm_bytes() + memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _limit(resource.RLIMIT_FSIZE, 0)
    _limit(resource.RLIMIT_NPROC, 0)
    _limit(resource.RLIMIT_NOFILE, _open_files() + 32)
    _harden()
    sys.addaudithook(_audit)


def _open_files() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 32


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
    _lock_down(memory_mb)
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


def check_limits(*, workers: int, timeout_s: float, memory_mb: int) -> None:
    """Refuse worker counts outside 1..MAX_WORKERS, time-outs that are not finite and > 0 (nan, inf, 0) and
    memory caps that are not a positive whole number of MB (CotgenError, one line naming the value)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise CotgenError(f"verifier workers must be a whole number from 1 to {MAX_WORKERS}, got {workers!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not (
        math.isfinite(timeout_s) and timeout_s > 0
    ):
        raise CotgenError(f"verifier timeout_s must be a finite number of seconds > 0, got {timeout_s!r}")
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 1:
        raise CotgenError(f"verifier memory_mb must be a whole number >= 1, got {memory_mb!r}")


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
        check_limits(workers=workers, timeout_s=timeout_s, memory_mb=memory_mb)
        if not (isinstance(grace_s, (int, float)) and math.isfinite(grace_s) and grace_s >= 0):
            raise CotgenError(f"verifier grace_s must be a finite number >= 0, got {grace_s!r}")
        if not (isinstance(start_timeout_s, (int, float)) and math.isfinite(start_timeout_s)) or (
            start_timeout_s <= 0
        ):
            raise CotgenError(f"verifier start_timeout_s must be finite and > 0, got {start_timeout_s!r}")
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
