"""The symbolic check that runs inside sandbox workers: math-verify (HF, 0.9) on LaTeX, with our own timer.

`check((pred, gold, timeout_s))` returns a status: correct | wrong | no_answer | bad_gold | rejected |
timeout.

- Both sides are screened (`sandbox.screen`) and wrapped before `parse`: in `\\boxed{...}` when the braces
  balance, else in `$...$` (math-verify returns nothing for bare LaTeX such as `\\sqrt{8}`). The Verifier has
  screened them already before sending; the worker screens again because `check` is reachable without it (any
  `WorkerPool("cotgen.verify.symbolic:check")`, or a direct call), and the screen is cheap next to `parse`.
- Only `LatexExtractionConfig` is used: LaTeX goes through latex2sympy's ANTLR parser, never through sympy's
  `parse_expr` (which calls `eval`), so model text is never executed even inside the sandbox.
- `verify(gold, pred, allow_set_relation_comp=True)`: `x \\le 3` matches `(-\\infty, 3]`; other options are
  math-verify's defaults (float_rounding=6, strict=True).
- Base numerals (`40_9`, `1011_{2}`) are compared here, digits and base, before math-verify, which ignores
  the subscript (it found `40_8` equal to `40_9`).
- math-verify's own SIGALRM timeouts are off; one `setitimer` covers parse + verify of the item and raises a
  BaseException (so `except Exception` inside libraries cannot swallow it). Should anything swallow it anyway,
  the item still reports `timeout`, never `correct`. Work that never returns to the interpreter is killed by
  the parent (`sandbox.WorkerPool`).

Importing this module imports math-verify and sympy and warms them up (about a second, once per worker).
"""

from __future__ import annotations

import logging
import re
import signal
from functools import lru_cache

import math_verify.grader
import math_verify.parser
from math_verify import LatexExtractionConfig, parse, verify

from cotgen.verify.sandbox import screen

math_verify.parser.TIMEOUT_WARNING_SHOWN = True  # the timer below replaces math-verify's
math_verify.grader.TIMEOUT_WARNING_SHOWN = True
logging.getLogger("math_verify").setLevel(logging.CRITICAL)
logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)

_CONFIG = [LatexExtractionConfig()]


class ItemTimeout(BaseException):
    """The item ran past its time limit."""


_timed_out = False


def _on_alarm(signum, frame):
    global _timed_out
    _timed_out = True
    raise ItemTimeout()


def wrap(text: str) -> str:
    """`\\boxed{text}` when braces balance, else `$text$`."""
    depth = 0
    for c in text.replace("\\{", "").replace("\\}", ""):
        depth += (c == "{") - (c == "}")
        if depth < 0:
            break
    return f"\\boxed{{{text}}}" if depth == 0 else f"${text}$"


# A numeral with a base subscript, as MATH writes base-conversion answers: 40_9, 1011_{2}, A3_{16}. math-verify
# drops the subscript (it finds 40_8 equal to 40_9), so these are compared here: digits and base both.
_BASE_NUMERAL = re.compile(r"^\$?\s*([0-9A-Z]+)\s*_\s*\{?\s*(\d+)\s*\}?\s*\$?$")


def base_numeral(text: str) -> tuple[str, int] | None:
    """"40_{9}" -> ("40", 9); None for anything else."""
    m = _BASE_NUMERAL.match(text.strip())
    return (m.group(1), int(m.group(2))) if m else None


def _base_status(pred: str, gold: str) -> str | None:
    """"correct"/"wrong" when either side is a base numeral: equal digits, and equal bases where both give one
    (an answer of "40" to "40_9" counts: the question names the base); None when neither side is one."""
    p, g = base_numeral(pred), base_numeral(gold)
    if p is None and g is None:
        return None
    if p is not None and g is not None:
        return "correct" if p == g else "wrong"
    digits = (p or g)[0]
    other = (gold if p is not None else pred).strip().strip("$").strip()
    return "correct" if other == digits else "wrong"


@lru_cache(maxsize=4096)
def _parse(text: str) -> tuple:
    return tuple(parse(wrap(text), extraction_config=_CONFIG, parsing_timeout=None))


def check(item: tuple[str | None, str, float]) -> str:
    """Status of one (pred, gold, timeout_s) pair; see the module docstring."""
    global _timed_out
    pred, gold, timeout_s = item
    if gold is None or not gold.strip() or screen(gold):
        return "bad_gold"
    if pred is not None and screen(pred):
        return "rejected"
    _timed_out = False
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        gold_parsed = _parse(gold)
        if not gold_parsed:
            status = "bad_gold"
        elif pred is None or not pred.strip():
            status = "no_answer"
        elif (based := _base_status(pred, gold)) is not None:
            status = based
        else:
            pred_parsed = _parse(pred)
            ok = bool(pred_parsed) and verify(
                list(gold_parsed), list(pred_parsed), allow_set_relation_comp=True, timeout_seconds=None
            )
            status = "correct" if ok else "wrong"
    except ItemTimeout:
        status = "timeout"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return "timeout" if _timed_out else status


check(("1", "1", 30.0))  # warm up the ANTLR parser and sympy (0.3 s) before the first real item
