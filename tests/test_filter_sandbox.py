"""Hostile input: no execution, no hang past the limit, no crash. Plus the worker pool's hard limits on its
own: a worker stuck in C code is killed at its deadline, a runaway allocation hits the memory cap, a dying
worker is replaced and later items still run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cotgen.verify.sandbox import WorkerPool, screen
from cotgen.verify.verifier import Verifier

TIMEOUT = 1.0


@pytest.fixture(scope="module")
def verifier():
    with Verifier(workers=2, timeout_s=TIMEOUT, memory_mb=512) as v:
        yield v


def injections(marker) -> list[str]:
    m = str(marker)
    return [
        f"__import__('os').system('touch {m}')",
        f"\\boxed{{__import__('os').system('touch {m}')}}",
        f'$__import__("os").system("touch {m}")$',
        "().__class__.__bases__[0].__subclasses__()",
        f"open('{m}', 'w').write('x')",
        f"eval(\"open('{m}','w')\")",
        f"lambda: __import__('os').system('touch {m}')",
        f"exec('import os; os.system(\"touch {m}\")')",
        f"x; import os; os.system('touch {m}')",
        f"getattr(__builtins__, 'open')('{m}', 'w')",
    ]


def test_code_injection_is_never_executed(verifier, tmp_path):
    marker = tmp_path / "pwned"
    preds = injections(marker)
    out = verifier.verify(preds + ["5"] * len(preds), ["5"] * len(preds) + preds)
    assert not marker.exists()
    assert not any(v.correct for v in out)
    assert {v.status for v in out[: len(preds)]} == {"rejected"}
    assert {v.status for v in out[len(preds) :]} == {"bad_gold"}


def test_injection_does_not_run_even_past_the_screen(tmp_path):
    """Straight into a worker, skipping the parent's screen: the worker screens again, parses LaTeX only."""
    from cotgen.verify import symbolic

    marker = tmp_path / "pwned"
    assert symbolic.check((f"__import__('os').system('touch {marker}')", "5", 5.0)) == "rejected"
    assert symbolic.check(("os.system('ls')", "5", 5.0)) == "rejected"
    assert not marker.exists()


@pytest.mark.parametrize(
    "pred",
    [
        "9**9**9**9",
        "9^{9^{9^{9}}}",
        "10^{10^{7}}",
        "10^{10^{10}}",
        "(x+1)^{60}",
        "\\frac{1}{" * 40 + "2" + "}" * 40,
        "(" * 200 + "1" + ")" * 200,
        "9" * 5000,
        "1" + "0" * 500,
        "\x00\x01\x02\x1b[31m",
        "\ud800\udfff",
        "5\ufffd",
        "\u202e5",
        "",
    ],
    ids=[
        "py-tower",
        "latex-tower",
        "10^10^7",
        "10^10^10",
        "poly-60",
        "deep-frac",
        "deep-parens",
        "5000-digits",
        "501-digits",
        "control",
        "surrogates",
        "replacement",
        "bidi",
        "empty",
    ],
)
def test_hostile_prediction_is_bounded(verifier, pred):
    start = time.monotonic()
    (out,) = verifier.verify([pred], ["5"])
    elapsed = time.monotonic() - start
    assert not out.correct
    assert out.status in {"wrong", "rejected", "timeout", "no_answer", "error"}
    assert elapsed < TIMEOUT + 1.0 + 3.0  # the limit, the kill grace, a worker restart


def test_workers_still_answer_after_hostile_items(verifier):
    verifier.verify(["10^{10^{10}}", "9^{9^{9^{9}}}"], ["\\sqrt{2}", "\\sqrt{3}"])
    assert [
        v.correct for v in verifier.verify(["2\\sqrt{2}", "\\frac{1}{3}"], ["\\sqrt{8}", "\\frac{2}{6}"])
    ] == [True, True]


def test_screen():
    assert screen("\\frac{\\sqrt{3}}{2}") is None
    assert screen("(-\\infty, 3] \\cup \\{5\\}") is None
    assert screen("\\cos x + \\sin x") is None
    assert "Python" in screen("__import__('os')")
    assert "Python" in screen("os.system('x')")
    assert "control" in screen("5\x07")
    assert "Unicode" in screen("\udc80")
    assert "longer" in screen("1" * 1001)
    assert "nested" in screen("{" * 61 + "}" * 61)
    assert "bare" in screen("(" * 7 + "1" + ")" * 7)
    assert "factorial" in screen("(10^{10})!")
    assert "exponent" in screen("9^{9^{9}}")
    assert "polynomial" in screen("(x+1)^{101}")


# About 40 characters each, one a line: a full worker time-out each before the screen (bench_filter reads
# the same file for its stall section).
STALLS = (Path(__file__).parent / "data" / "verifier" / "stalls.txt").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("pred", STALLS)
def test_costly_input_is_rejected_before_any_worker(pred):
    """Each of these stalled a worker to its time-out; the screen now answers at once, in the parent."""
    with Verifier(workers=1, timeout_s=5.0) as v:
        start = time.monotonic()
        pred_out, gold_out = v.verify([pred, "5"], ["5", pred])
        elapsed = time.monotonic() - start
        assert (pred_out.status, gold_out.status) == ("rejected", "bad_gold")
        assert v._pool is None and v.symbolic_pairs == 0
    assert elapsed < 0.5
    assert screen(pred) is not None


@pytest.mark.parametrize(
    "text",
    ["\\frac{1}{" * 14 + "2" + "}" * 14, "((((((1))))))", "100!", "n!", "(n-1)!", "\\frac{10!}{5!}",
     "e^{x^2}",
     "2^{2^{2^{2}}}", "10^{100000}", "(x+1)^{100}", "1.5 \\times 10^{3}", "\\left( \\frac{1}{2} \\right)^{2}",
     "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "(-\\infty, 3] \\cup \\{5\\}", "11,\\!111"],
)
def test_screen_keeps_cheap_answers(text):
    assert screen(text) is None


def _payloads(marker) -> dict[str, str]:
    """Code run inside a worker (target `builtins:exec`), each going below `_harden`'s Python rebinding."""
    m = str(marker)
    return {
        "os.system": f"import posix; posix.system('touch {m}')",
        "os.posix_spawn": f"import posix; posix.posix_spawn('/usr/bin/touch', ['touch', '{m}'], {{}})",
        "os.exec": f"import posix; posix.execv('/usr/bin/touch', ['touch', '{m}'])",
        "os.fork": "import posix; posix.fork()",
        "subprocess.Popen": f"import sys; sys.modules.pop('subprocess'); import subprocess; "
        f"subprocess.Popen(['touch', '{m}'])",  # a fresh subprocess module: the real Popen
        "fork_exec": "import _posixsubprocess; _posixsubprocess.fork_exec()",  # raises no audit event itself
        "fresh _posixsubprocess": "import sys; sys.modules.pop('_posixsubprocess'); import _posixsubprocess",
        "gc.get_objects": "import gc; gc.get_objects()",
        "open for writing": f"import _io; _io.open('{m}', 'w')",
        "os.open for writing": f"import posix; posix.open('{m}', posix.O_WRONLY | posix.O_CREAT)",
        "os.remove": "import posix; posix.remove('/nonexistent-cotgen')",
        "socket.__new__": "import _socket; _socket.socket()",
        "ctypes.CDLL": "import ctypes; ctypes.CDLL(None)",
        "ctypes.dlopen": "import _ctypes; _ctypes.dlopen(None, 2)",
    }


def test_audit_hook_refuses_payloads_that_reach_the_worker(tmp_path):
    marker = tmp_path / "pwned"
    payloads = _payloads(marker)
    with WorkerPool("builtins:exec", workers=1, timeout_s=5) as pool:
        out = pool.map(list(payloads.values()) + ["x = 1 + 1", "open('/proc/self/status').read()"])
        for name, (status, value) in zip(payloads, out):
            assert status == "error" and "PermissionError" in value, (name, value)
        assert out[-2:] == [("ok", None), ("ok", None)]  # reading still works, the worker still answers
        assert pool.restarts == 0
    assert not marker.exists()


def test_worker_rlimits():
    import resource

    with WorkerPool("resource:getrlimit", workers=1, timeout_s=5) as pool:
        fsize, core, nofile = pool.map([resource.RLIMIT_FSIZE, resource.RLIMIT_CORE, resource.RLIMIT_NOFILE])
    assert fsize == ("ok", (0, 0)) and core == ("ok", (0, 0))
    assert nofile[0] == "ok" and nofile[1][1] <= 256


def test_symbolic_worker_answers_after_lock_down():
    with WorkerPool("cotgen.verify.symbolic:check", workers=1, timeout_s=5) as pool:
        assert pool.map([("\\sqrt{8}", "2\\sqrt{2}", 5.0), ("\\frac{1}{3}", "0.5", 5.0)]) == [
            ("ok", "correct"),
            ("ok", "wrong"),
        ]


def test_pool_kills_work_stuck_in_c():
    with WorkerPool("math:factorial", workers=2, timeout_s=0.5, grace_s=0.5) as pool:
        start = time.monotonic()
        out = pool.map([5, 10**9, 6, 10**9, 7])
        elapsed = time.monotonic() - start
        assert out == [("ok", 120), ("timeout", None), ("ok", 720), ("timeout", None), ("ok", 5040)]
        assert pool.restarts == 2
        assert elapsed < 10
        assert pool.map([3]) == [("ok", 6)]


def test_pool_memory_limit_and_crash_recovery():
    with WorkerPool("builtins:bytearray", workers=1, timeout_s=10, memory_mb=256) as pool:
        assert pool.map([16, 2**32, 8]) == [("ok", bytearray(16)), ("memory", None), ("ok", bytearray(8))]
    with WorkerPool("os:_exit", workers=1, timeout_s=5) as pool:
        out = pool.map([3])
        assert out[0][0] == "crash" and pool.restarts == 1


def test_sandbox_blocks_process_creation_and_writes(tmp_path):
    with WorkerPool("os:system", workers=1, timeout_s=5) as pool:
        ((status, value),) = pool.map([f"touch {tmp_path / 'x'}"])
    assert status == "error" and "blocked" in value
    with WorkerPool("builtins:open", workers=1, timeout_s=5) as pool:
        ((status, value),) = pool.map([str(tmp_path / "y")])  # read mode: allowed, file does not exist
        assert status == "error" and "FileNotFoundError" in value
    assert not (tmp_path / "x").exists()
