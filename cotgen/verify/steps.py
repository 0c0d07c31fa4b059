"""The step checker: find the arithmetic claims in a reasoning text and decide each with exact rationals.

A claim is an equality between two numeric expressions written in the text: the `=` segments of a chain
(`8 + 2 + 7 = 17 + 3 = 20`: two claims), GSM8K's `<<48/2=24>>` calculator notes, and `3 + 4 is 7` in prose. Each
gets a verdict: `right`, `wrong` or `unchecked` (a claim this checker cannot decide: a variable, a unit
conversion, a number too large). A trace gets the counts and `ok(...)`: no wrong step and, where the task has
arithmetic, at least one right one.

How a text is read (one linear pass of one regular expression, no backtracking traps; nothing reaches `eval`):
- Numbers: integers, decimals, `1,234,567` (groups of three only: `3,5` is two numbers), a currency sign before
  (`$`, `€`, `£`), `%` after (`20%` is 1/5). Operators `+ - * / ^ **`, `×`, `·`, `÷`, `−`, `x` between two
  numbers, `\\times`, `\\cdot`, `\\div`, `\\frac{a}{b}`, the words times, plus, minus, divided by, multiplied by,
  and `of` after a percentage. Brackets of any kind; a number before a bracket multiplies (`2(3 + 4)`).
- One word after a number is its unit (`5 apples + 3 apples = 8 apples`); any other word ends the expression.
- An expression touching a letter (`3x + 2 = 11`, `x - 3 = 5`, `2 = 10y`) is an unknown: its claims are
  `unchecked`, never `wrong`. So are sums mixing a percentage with a plain number (`50 + 10%`), unequal sides that
  change a convertible unit (`2 hours = 2 * 60`), two bare numbers that differ (`Day 1 = 5 apples` is no
  arithmetic), a division by zero, and anything over the size limits below.
- A chain is read pairwise; `8 + 2 = 10 + 7 = 17` (a running total: the next part starts with the value before)
  counts as right. A decimal literal is right at its printed precision (`10/3 = 3.33`, `2/3 = 0.66`: within one
  unit of its last digit); integers must be exact. `≈` allows 1%. A percentage alone on one side matches p/100
  or p (`10 / 50 * 100 = 20%`).
- The same claim written twice (GSM8K's `48/2 = <<48/2=24>>24`) counts once.

Limits (a hostile text costs at most linear time): numbers of at most 40 digits, exponents of at most 64 with
results under 4,096 bits, 128 tokens and 24 brackets deep per expression, 256 claims per trace, the first
100,000 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, NamedTuple

RIGHT, WRONG, UNCHECKED = "right", "wrong", "unchecked"
MAX_TEXT = 100_000
MAX_DIGITS = 40
MAX_EXPONENT = 64
MAX_BITS = 4096
MAX_TOKENS = 128
MAX_DEPTH = 24
MAX_STEPS = 256
APPROX = Fraction(1, 100)  # `≈` tolerance, relative

_TOKEN = re.compile(r"""
    (?P<num>\d+[ ](?:and[ ])?[1-9]\d?/[1-9]\d{0,2}(?![\d/.])|\d+/\d+(?![\d.])
          |(?:[$€£][ ]?)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d{1,3}(?:[ ]\d{3})+(?![\d,])|\d+)(?:\.\d+)?(?:[ ]?%)?
          |[$€£]?\.\d+(?:[ ]?%)?)
  | (?P<frac>\\[dt]?frac)
  | (?P<op>\*\*|//|[-+*/^×·÷−–]|\\times|\\cdot|\\div)
  | (?P<lp>\\left[(\[]|[(\[{])
  | (?P<rp>\\right[)\]]|[)\]}])
  | (?P<eq>==|=|≈|~=|\\approx)
  | (?P<word>[A-Za-z]+)
  | (?P<ws>\s+|\\[,;:! ]|\\\$|\$|\\(?:boxed|displaystyle|quad|qquad)\b)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)
_NOTE = re.compile(r"<<([^<>=]{1,200})=([^<>=]{1,60})>>")
_TAG = re.compile(r"</?(?:reasoning|answer)>")  # the student format's tags separate, they are not words
_OPS = {"+": "+", "-": "-", "−": "-", "–": "-", "*": "*", "×": "*", "·": "*", "\\times": "*", "\\cdot": "*",
        "/": "/", "//": "//", "÷": "/", "\\div": "/", "^": "^", "**": "^"}
_OP_WORDS = {"times": "*", "plus": "+", "minus": "-"}
_BY_WORDS = {"divided": "/", "multiplied": "*"}  # + "by"
_EQ_WORDS = {"is", "equals"}
_GOES_ON = {*_OP_WORDS, *_BY_WORDS, *_EQ_WORDS, "x", "of"}  # words after a unit that continue the expression
_NEUTRAL = set(".,;?\"“”’")  # may follow a number without changing it
_NOT_UNITS = {"and", "or", "so", "then", "but", "the", "a", "an", "is", "are", "was", "were", "to", "in", "of",
              "for", "with", "which", "that", "thus", "therefore", "hence", "each", "per", "more", "less", "than",
              "by", "at", "on", "from", "if", "as", "we", "he", "she", "they", "it", "you", "i", "equals",
              "times", "plus", "minus", "divided", "multiplied", "over", "into", "out", "not", "because", "since",
              "when", "where", "while", "after", "before", "there", "this", "these", "those", "his", "her",
              "their", "our", "its", "my", "your", "all", "every", "total", "x"}
_CONVERTIBLE = {  # units whose change of name changes the number (`2 hours = 120 minutes`)
    "second", "minute", "min", "hour", "hr", "day", "week", "month", "year", "inch", "foot", "feet", "ft",
    "yard", "mile", "mm", "cm", "meter", "metre", "km", "ounce", "oz", "pound", "lb", "gram", "kg", "cup",
    "pint", "quart", "gallon", "liter", "litre", "ml", "cent", "penny", "pennies", "dozen", "pair", "quarter",
    "dime", "nickel", "percent", "decade", "century"}


class Step(NamedTuple):
    """One claim: `lhs = rhs` as written (normalised spacing), its verdict and why."""

    lhs: str
    rhs: str
    verdict: str
    why: str = ""


@dataclass(frozen=True)
class Work:
    """The steps of one trace."""

    steps: tuple[Step, ...]

    @property
    def right(self) -> int:
        return sum(s.verdict == RIGHT for s in self.steps)

    @property
    def wrong(self) -> int:
        return sum(s.verdict == WRONG for s in self.steps)

    @property
    def unchecked(self) -> int:
        return sum(s.verdict == UNCHECKED for s in self.steps)

    def ok(self, need_step: bool = True) -> bool:
        """No wrong step and, if `need_step` (the task has arithmetic), at least one right one."""
        return self.wrong == 0 and (self.right > 0 or not need_step)


class _Unchecked(Exception):
    """A claim this checker cannot decide (carries the reason)."""


class _Tok(NamedTuple):
    kind: str  # num, op, lp, rp, eq, frac
    text: str
    value: Fraction | None = None
    pct: bool = False
    unit: str = ""


class _Val(NamedTuple):
    q: Fraction
    pct: bool  # a percentage (or sum of them), not yet applied to an amount


def check_work(text: str | None) -> Work:
    """The arithmetic claims of `text` with their verdicts (never raises on any input)."""
    if not text:
        return Work(())
    text = text[:MAX_TEXT]
    steps: dict[tuple[str, str], Step] = {}
    for m in _NOTE.finditer(text):  # <<expr=value>>: one claim each, then blanked out of the prose
        if len(steps) >= MAX_STEPS:
            break
        for key, step in _claims(m.group(1) + "=" + m.group(2)):
            steps.setdefault(key, step)
    prose = _TAG.sub(" ", _NOTE.sub(lambda m: " " * len(m.group(0)), text))
    for key, step in _claims(prose):
        if len(steps) >= MAX_STEPS:
            break
        steps.setdefault(key, step)
    return Work(tuple(steps.values())[:MAX_STEPS])


def check_many(texts: Iterable[str | None]) -> list[Work]:
    return [check_work(t) for t in texts]


# ---- reading: text -> runs of arithmetic tokens -> claims


class _Run:
    def __init__(self, touched_before: bool):
        self.items: list[_Tok] = []
        self.touched_before = touched_before  # a letter or operand right before the run's first token
        self.touched_after = False
        self.part_has_op = False  # the expression being read (since the last `=`) has an operator


def _claims(text: str) -> Iterable[tuple[tuple[str, str], Step]]:
    """(key, step) for each claim in `text`; the key leaves units out, so `48/2 = 24` and `48/2 = 24 clips` are
    one claim."""
    tokens = [(m.lastgroup, m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    n = len(tokens)
    run: _Run | None = None
    prev_end, prev_kind = -1, ""  # the last non-space token
    i = 0
    while i < n:
        kind, tok, start, end = tokens[i]
        glued = start == prev_end
        if kind == "ws":
            if "\n" in tok and run is not None:
                yield from _finish(run)  # a new line: a new expression (`1800\nNectarines = 16 * 30`)
                run = None
            i += 1
            continue
        nxt = _next(tokens, i)
        items = run.items if run else []
        last = items[-1] if items else None
        if kind == "word":
            low = tok.lower()
            as_op = None
            operand_next = nxt is not None and nxt[0] in ("num", "lp")
            if last is not None and last.kind in ("num", "rp"):
                if low == "x" and operand_next:
                    as_op = "*"
                elif low in _OP_WORDS and operand_next:
                    as_op = _OP_WORDS[low]
                elif low in _BY_WORDS and nxt and nxt[1].lower() == "by":
                    after = _next(tokens, _skip_to(tokens, i, nxt))
                    if after is not None and after[0] in ("num", "lp"):
                        as_op = _BY_WORDS[low]
                        i = _skip_to(tokens, i, nxt)  # consume "by"
                elif low == "of" and last.pct and operand_next:
                    as_op = "*"
                elif low in _EQ_WORDS and run is not None and run.part_has_op and not last.unit and nxt \
                        and (nxt[0] == "num" or nxt[1] in ("-", "−")):
                    items.append(_Tok("eq", "="))
                    run.part_has_op = False
                    prev_end, prev_kind = end, "eq"
                    i += 1
                    continue
            if as_op is not None:
                items.append(_Tok("op", as_op))
                run.part_has_op = True
                prev_end, prev_kind = end, "op"
                i += 1
                continue
            if (last is not None and last.kind == "num" and not glued and not last.unit and len(tok) > 1
                    and low not in _NOT_UNITS and tok.isalpha()):
                items[-1] = last._replace(unit=_singular(low))  # a unit; the run goes on if an operator follows
                prev_end, prev_kind = end, "num"
                i += 1
                if nxt is None or not (nxt[0] in ("op", "eq", "rp") or nxt[1].lower() in _GOES_ON):
                    yield from _finish(run)  # `27% because (...)`: the unit ends the expression
                    run = None
                continue
            if run is not None:
                if glued and last is not None and last.kind in ("num", "rp"):
                    run.touched_after = True  # 3x, 2y: an unknown, not a number
                yield from _finish(run)
                run = None
            prev_end, prev_kind = end, "word"
            i += 1
            continue
        if kind == "other":
            if run is not None:
                if glued and tok not in _NEUTRAL:  # 3² or 5! or 6:48 or 2.5.1: not the number it reads as
                    run.touched_after = tok != "." or bool(nxt and nxt[2] == end and nxt[0] == "num")
                yield from _finish(run)
                run = None
            prev_end, prev_kind = end, "other" if tok not in ",;:" else "punct"
            i += 1
            continue
        # an arithmetic token
        if kind == "op" and tok == "**" and (last is None or last.kind not in ("num", "rp") or nxt is None
                                             or nxt[0] not in ("num", "lp") or glued != (nxt[2] == end)):
            prev_end = end  # markdown bold (**42**), not a power: `2**3` and `2 ** 3` are powers
            i += 1
            continue
        if kind == "num" and last is not None and last.kind in ("num", "rp"):
            yield from _finish(run)  # two numbers in a row: a new expression
            run = None
        if run is None:
            touched = glued and prev_kind in ("word", "other", "punct")  # x2, 6:00+48
            if kind == "op" and not glued and prev_kind in ("word", "other"):
                touched = True  # `x - 3`: the run starts inside an expression we cannot read
            run = _Run(touched)
        if kind == "num":
            run.items.append(_number(tok))
        elif kind == "op":
            run.items.append(_Tok("op", _OPS[tok]))
            run.part_has_op = True
        elif kind == "eq":
            run.items.append(_Tok("eq", "≈" if tok in ("≈", "~=", "\\approx") else "="))
            run.part_has_op = False
        else:
            run.items.append(_Tok(kind, tok))
        prev_end, prev_kind = end, kind
        i += 1
    if run is not None:
        yield from _finish(run)


def _next(tokens, i):
    for j in range(i + 1, min(len(tokens), i + 4)):
        if tokens[j][0] != "ws":
            return tokens[j]
    return None


def _skip_to(tokens, i, target) -> int:
    j = i + 1
    while tokens[j] is not target:
        j += 1
    return j


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        return word[:-1]
    return word


def _number(tok: str) -> _Tok:
    if "/" in tok:  # 1/5 or 2 1/2 or 5 and 2/3: one number (`28 / 1/5` is 140)
        whole, _, frac = tok.replace(" and ", " ").rpartition(" ")
        if len(tok) > 2 * MAX_DIGITS:
            return _Tok("num", tok, None)
        num, _, den = frac.partition("/")
        if int(den) == 0:
            return _Tok("num", tok, None)
        part = Fraction(int(num), int(den))
        return _Tok("num", tok, int(whole) + part if whole else part)
    raw = tok.lstrip("$€£ ").replace(",", "").replace(" ", "")
    pct = raw.endswith("%")
    raw = raw.rstrip("%")
    if len(raw) > MAX_DIGITS + 1:
        return _Tok("num", tok, None, pct)  # too long: unchecked where used
    value = Fraction(raw) / (100 if pct else 1)
    return _Tok("num", tok, value, pct)


def _finish(run: _Run) -> Iterable[tuple[tuple[str, str], Step]]:
    parts: list[list[_Tok]] = [[]]
    eqs: list[str] = []
    for t in run.items:
        if t.kind == "eq":
            parts.append([])
            eqs.append(t.text)
        else:
            parts[-1].append(t)
    if not eqs:
        return
    if parts[-1] and parts[-1][-1].kind in ("op", "lp", "frac"):
        run.touched_after = True  # `= 5 + x`: the last expression goes on past what we can read
    incomplete = {0} if run.touched_before or (parts[0] and parts[0][0].kind == "op"
                                               and parts[0][0].text not in "-+") else set()
    if run.touched_after:
        incomplete.add(len(parts) - 1)
    for k, eq in enumerate(eqs):
        left, right = _trim(parts[k]), _trim(parts[k + 1])
        if not left or not right:
            continue  # `x = 5`: a definition, no claim
        lhs, rhs = _show(left), _show(right)
        key = (_show(left, units=False), _show(right, units=False))
        if k in incomplete or k + 1 in incomplete:
            yield key, Step(lhs, rhs, UNCHECKED, "touches an unknown")
            continue
        yield key, Step(lhs, rhs, *_decide(left, right, eq, first=k == 0))


def _trim(part: list[_Tok]) -> list[_Tok]:
    """Drop brackets opened before the part or closed after it (`(3 + 4 = 7)`)."""
    if len(part) > MAX_TOKENS:
        return part  # the parser refuses it
    depth, lead = 0, 0
    while lead < len(part) and part[lead].kind == "lp" and _closes_at(part, lead) is None:
        lead += 1
    part = part[lead:]
    out: list[_Tok] = []
    for t in part:
        if t.kind == "lp":
            depth += 1
        elif t.kind == "rp":
            if depth == 0:
                continue
            depth -= 1
        out.append(t)
    return out


def _closes_at(part: list[_Tok], i: int) -> int | None:
    depth = 0
    for j in range(i, len(part)):
        if part[j].kind == "lp":
            depth += 1
        elif part[j].kind == "rp":
            depth -= 1
            if depth == 0:
                return j
    return None


def _show(part: list[_Tok], units: bool = True) -> str:
    out = []
    for t in part:
        if t.kind == "num":
            if t.value is None or "/" in t.text:
                text = " ".join(t.text.split())
            else:
                text = _plain(t.value * (100 if t.pct else 1)) + ("%" if t.pct else "")
            out.append(text + (f" {t.unit}" if t.unit and units else ""))
        else:
            out.append({"lp": "(", "rp": ")", "frac": "\\frac"}.get(t.kind, t.text))
    return " ".join(out)


def _plain(q: Fraction) -> str:
    if q.denominator == 1:
        return str(q.numerator)
    return f"{float(q):g}" if len(str(q.denominator)) < 16 else str(q)


# ---- deciding one claim


def _decide(left: list[_Tok], right: list[_Tok], eq: str, first: bool) -> tuple[str, str]:
    try:
        a, b = _Parser(left).value(), _Parser(right).value()
    except _Unchecked as why:
        return UNCHECKED, str(why)
    if a.q == b.q:
        return RIGHT, ""
    if eq == "≈":
        return (RIGHT, "approximately") if abs(a.q - b.q) <= APPROX * max(abs(a.q), abs(b.q)) else (WRONG, "")
    lone_a, lone_b = _lone(left), _lone(right)
    if lone_a and lone_b:
        return UNCHECKED, "two different numbers"
    if lone_a and first:
        return UNCHECKED, "a label"  # `Area of 4 bedrooms = 121 * 4`, `Remaining 10 = 62,300/10`
    percent = any(t.kind == "num" and t.pct for t in left + right)
    for lone, other in ((lone_b, a), (lone_a, b)):
        if lone is None:
            continue
        printed = lone.value * 100 if lone.pct else lone.value  # the number as written
        places = len(lone.text.split(".")[1].rstrip("% ")) if "." in lone.text else 0
        scales = (1, 100, Fraction(1, 100)) if percent else (1,)
        for scale in scales:
            shown = other.q * scale * (100 if lone.pct else 1)
            if shown == printed and scale != 1:
                return RIGHT, "percent written as a number"  # 10 / 50 * 100 = 20%, 15/90 * 100% = 16.67
            if places and abs(shown - printed) < Fraction(1, 10 ** places):
                return RIGHT, f"rounded to {places} decimal places"
    if _running(left, right, a) or _running(right, left, b):
        return RIGHT, "running total"
    units_l = {t.unit for t in left if t.kind == "num" and t.unit}
    units_r = {t.unit for t in right if t.kind == "num" and t.unit}
    if units_l != units_r and (units_l | units_r) & _CONVERTIBLE:
        return UNCHECKED, "unit conversion"
    return WRONG, ""


def _lone(part: list[_Tok]) -> _Tok | None:
    """The number, if the part is one number (perhaps negated)."""
    nums = [t for t in part if t.kind == "num"]
    if len(nums) == 1 and "/" not in nums[0].text and len(part) <= 2 and part[-1].kind == "num" \
            and all(t.kind == "num" or (t.kind == "op" and t.text == "-") for t in part) and nums[0].value is not None:
        return nums[0] if len(part) == 1 else nums[0]._replace(value=-nums[0].value)
    return None


def _running(before: list[_Tok], after: list[_Tok], value: _Val) -> bool:
    """`8 + 2 = 10 + 7`: `after` starts with the value of `before` and goes on with + or -."""
    if len(after) < 3 or after[0].kind != "num" or after[1].kind != "op" or after[1].text not in "+-*/":
        return False
    return any(t.kind == "op" for t in before) and after[0].value == value.q


class _Parser:
    """Recursive descent over one expression's tokens: exact rationals, sizes bounded."""

    def __init__(self, toks: list[_Tok]):
        if len(toks) > MAX_TOKENS:
            raise _Unchecked("expression too long")
        self.toks, self.i, self.depth = toks, 0, 0

    def value(self) -> _Val:
        v = self._sum()
        if self.i != len(self.toks):
            raise _Unchecked("not one expression")
        return v

    def _peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _op(self, ops: str) -> str | None:
        t = self._peek()
        if t is not None and t.kind == "op" and t.text in ops:
            self.i += 1
            return t.text
        return None

    def _sum(self) -> _Val:
        v = self._product()
        while (op := self._op("+-")) is not None:
            w = self._product()
            if v.pct != w.pct:
                raise _Unchecked("percentage added to a number")
            v = _Val(_bounded(v.q + w.q if op == "+" else v.q - w.q), v.pct)
        return v

    def _product(self) -> _Val:
        v = self._unary()
        while True:
            op = self._op("*/") or self._op("//")
            if op is None:
                t = self._peek()
                if t is None or t.kind not in ("lp", "frac"):
                    return v
                op = "*"  # 2(3 + 4)
            w = self._unary()
            if op != "*" and w.q == 0:
                raise _Unchecked("division by zero")
            q = v.q * w.q if op == "*" else v.q / w.q
            v = _Val(_bounded(Fraction(q.numerator // q.denominator) if op == "//" else q), False)

    def _unary(self) -> _Val:
        op = self._op("+-")
        if op is None:
            return self._power()
        self._enter()
        v = self._unary()
        self.depth -= 1
        return _Val(-v.q, v.pct) if op == "-" else v

    def _power(self) -> _Val:
        base = self._atom()
        if self._op("^") is None:
            return base
        self._enter()
        exp = self._unary()
        self.depth -= 1
        if exp.q.denominator != 1 or abs(exp.q) > MAX_EXPONENT:
            raise _Unchecked("exponent not a small whole number")
        if base.q == 0 and exp.q < 0:
            raise _Unchecked("division by zero")
        size = max(base.q.numerator.bit_length(), base.q.denominator.bit_length())
        if size * abs(exp.q.numerator) > MAX_BITS:
            raise _Unchecked("number too large")
        return _Val(base.q ** exp.q.numerator, False)

    def _atom(self) -> _Val:
        t = self._peek()
        if t is None:
            raise _Unchecked("expression ends early")
        self.i += 1
        if t.kind == "num":
            if t.value is None:
                raise _Unchecked("number too long")
            return _Val(t.value, t.pct)
        if t.kind == "lp":
            self._enter()
            v = self._sum()
            self._close()
            self.depth -= 1
            return v
        if t.kind == "frac":
            num, den = self._group(), self._group()
            if den.q == 0:
                raise _Unchecked("division by zero")
            return _Val(_bounded(num.q / den.q), False)
        raise _Unchecked(f"unexpected {t.text!r}")

    def _group(self) -> _Val:
        t = self._peek()
        if t is None or t.kind != "lp":
            raise _Unchecked("\\frac without {..}{..}")
        return self._atom()

    def _close(self) -> None:
        t = self._peek()
        if t is None or t.kind != "rp":
            raise _Unchecked("unclosed bracket")
        self.i += 1

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Unchecked("nested too deep")


def _bounded(q: Fraction) -> Fraction:
    if q.numerator.bit_length() > MAX_BITS or q.denominator.bit_length() > MAX_BITS:
        raise _Unchecked("number too large")
    return q


# ---- tables

WORK_COLUMNS = ("steps_right", "steps_wrong", "steps_unchecked")


def work_ok_expr():
    """`Work.ok()` over the count columns, as a Polars expression: a right step and no wrong one."""
    import polars as pl

    return (pl.col("steps_wrong") == 0) & (pl.col("steps_right") > 0)


def add_work(df, text: str, where=None, *, require: bool = False):
    """`df` (a Polars frame) with the step counts of column `text` (null where `where`, a Boolean expression, is
    false: only the rows that can still be kept are read) and `bad_work`: no right step or a wrong one, on rows
    read, when `require`."""
    import polars as pl

    if where is None:
        mask = [True] * df.height
    else:  # with_columns broadcasts a literal to the frame's height
        mask = df.with_columns(where.alias("_work_mask"))["_work_mask"].fill_null(False).to_list()
    works = [check_work(t) if m else None for t, m in zip(df[text].to_list(), mask)]
    counts = {name: pl.Series(name, [None if w is None else getattr(w, attr) for w in works], dtype=pl.Int32)
              for name, attr in zip(WORK_COLUMNS, ("right", "wrong", "unchecked"))}
    bad = [require and w is not None and not w.ok() for w in works]
    return df.with_columns(*counts.values(), pl.Series("bad_work", bad, dtype=pl.Boolean))
