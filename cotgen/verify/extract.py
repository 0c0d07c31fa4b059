"""Answer extraction: pull a final answer out of a solution or a model completion.

`last_boxed` reads MATH-style gold answers and completions that follow the `\\boxed{}` convention (pure
string code, no sympy). `extract_frame` / `extract_answer` apply the extraction ladder below to completions,
as Polars expressions over a whole batch: each rule runs only on the rows no earlier rule answered (only the
brace matching of `\\boxed{}` runs in Python, on the rows that hold a box).

The ladder, first hit wins; the method is recorded per row (`METHODS`):

1. `answer_tag`: the last `<answer>...</answer>` (the student format; a `\\boxed{}` inside it is unwrapped).
2. `hedged`: two or more different answers boxed (`\\boxed{2} or \\boxed{3}`, `hedged_boxes`): the answer is
   null, so a hedge is never correct, and no later rule runs. The same answer boxed twice is not a hedge.
3. `boxed`: the last `\\boxed{...}` / `\\fbox{...}`, brace-matched (MATH, NeMo-Skills, Qwen2.5-Math).
4. `hashes`: the rest of the line after the last `####` (GSM8K, verl).
5. `answer_is`: after the last "the answer is" (lm-eval gsm8k-cot), up to the end of the sentence.
6. `final_answer_is`: after the last "final answer" [is|:] (Minerva), up to the end of the sentence.
7. `last_number`: the expression around the last number (lm-eval "flexible", verl); a fallback, flagged.
8. `none`: nothing found; the answer is null (unparsed).

A candidate that is blank after trimming counts as not found (an empty `<answer></answer>` must never earn
reward), and the ladder goes on. A sentence is cut at the first period followed by a space or the end, or, if
it starts with `$`, at the closing `$` ("$a$ or $b$" is kept whole, as "a, b"). An arithmetic chain there
("12 - 5 = 7") gives its result. Markdown bold around the answer ("**42**.", "#### **42**") is dropped.

The fallback never turns LaTeX or algebra into a bare number. It returns the whole expression that holds the
last number: the last `$...$` (or `\\(...\\)`) segment if the number is inside it, else the run of
operands and operators around it, with brackets balanced. After an `=` only the right side is kept. So
"The result is \\frac{1}{2}" gives `\\frac{1}{2}` (not 2), "so x = 10^6" gives `10^6` and "(x+1)^2" stays
whole; "12 + 8 = 20 apples." gives 20. Values of one unknown joined by "or", "and" or commas ("$k = 3$ or
$k = -3$", "x = 2 or x = 5") give them all, "3, -3", for the verifier to compare as a set (so a `\\pm 3` gold
matches, and a gold 3 does not). The fallback does not run at all on a text that holds a format anchor
(`<answer>`, `</answer>`, `\\boxed`, `\\fbox`, `####`): there a strict reading exists, and if it is blank or
never closed (a truncated completion) the answer is none, not some other number.
"""

from __future__ import annotations

import re

import polars as pl

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")

METHODS = ("answer_tag", "hedged", "boxed", "hashes", "answer_is", "final_answer_is", "last_number", "none")
FALLBACK_METHODS = ("last_number",)
NO_ANSWER_METHODS = ("hedged",)  # found, but the answer is null: never correct

_HAS_BOX = r"\\(?:boxed|fbox)"
_TAG = r"(?s).*<answer>(.*?)</answer>"
_HASHES = r"(?s).*####[ \t]*([^\n]*)"
_ANSWER_IS = r"(?is).*\bthe answer is\b[ \t]*:?[ \t]*([^\n]*)"
_FINAL_IS = r"(?is).*\bfinal answer\b(?:[ \t]+is\b)?[ \t]*:?[ \t]*([^\n]*)"
# The last-number fallback (Python, on the rows no anchor answered). "1,000" and "-3.5" are whole numbers.
_ANCHOR = re.compile(r"</?answer>|\\(?:boxed|fbox)(?![A-Za-z])|####")
_NUMBER = re.compile(r"(?<![\d.])-?(?:\d(?:[\d,]*\d)?(?:\.\d+)?|\.\d+)")
_MATH = re.compile(r"(?<!\\)\$\$?((?:\\\$|[^$])+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S)
_TOKEN = set("0123456789.,%!'|^_{}()[]\\+-*/=<>×÷·abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_OPERATOR = re.compile(r"(?:[=+\-*/^<>×÷·]|\\(?:times|cdot|div|pm|le|ge|leq|geq))$")
_OPERATOR_AHEAD = re.compile(r"[=+\-*/^<>×÷·]|\\(?:times|cdot|div|pm|le|ge|leq|geq)(?![A-Za-z])")
_OPEN, _CLOSE = "([{", ")]}"


def last_boxed(text: str | None) -> str | None:
    """Content of the last `\\boxed{...}` or `\\fbox{...}` in `text`, stripped; None if there is none.

    Braces are matched, so `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`; escaped `\\{` and `\\}` do not count.
    `\\boxed 5` (no braces, as in a few MATH solutions) gives the token up to the next space or `$`.
    Only the last box counts: if it is never closed (a truncated completion), the answer is None, not an
    earlier box.
    """
    if not text:
        return None
    last = None
    for last in _BOX.finditer(text):
        pass
    return None if last is None else _box_end(text, last.end())[0]


def _box_end(text: str, i: int) -> tuple[str | None, int]:
    """(content, end) of the box whose name ends at `i` (see `last_boxed`); content None if never closed."""
    n = len(text)
    while i < n and text[i].isspace():
        i += 1
    if i == n or text[i] != "{":
        j = i
        while j < n and not text[j].isspace() and text[j] not in "${}":
            j += 1
        return text[i:j].rstrip(".,;") or None, j
    depth, j = 0, i
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2  # skip the escaped character: \{ \} \\
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip(), j + 1
        j += 1
    return None, n


_BOX_NOISE = re.compile(r"\s+|\\[!,;]|\\(?:left|right)(?![A-Za-z])|\$")
_BOX_EDGES = re.compile(r"^[A-Za-z]=|\.$")


def hedged_boxes(text: str | None) -> list[str] | None:
    """The different answers of a text that boxes more than one (`\\boxed{2} or \\boxed{3}`: a hedge), in order;
    None when it boxes one answer (however often), or none.

    Only outermost, closed boxes count; two boxes are the same answer when they are equal up to spaces, `$`,
    `\\left`/`\\right`, thin spaces, a final period and a leading `x=` (`\\boxed{3}` and `\\boxed{x = 3}`).
    One pass over the text: each character is read at most twice, nested boxes included."""
    if not text:
        return None
    seen: dict[str, str] = {}
    pos = 0
    for m in _BOX.finditer(text):
        if m.start() < pos:  # inside the previous box
            continue
        content, pos = _box_end(text, m.end())
        if content:
            same = _BOX_EDGES.sub("", _BOX_NOISE.sub("", content.replace("\\dfrac", "\\frac")))
            seen.setdefault(same, content)
    return list(seen.values()) if len(seen) > 1 else None


def _run_left(text: str, i: int) -> int:
    """Start of the expression that ends at `i`: token runs joined by operators (spaces allowed around an
    operator, and after a LaTeX command such as `\\log_2`)."""
    while True:
        while i > 0 and text[i - 1] in _TOKEN:
            i -= 1
        j = i
        while j > 0 and text[j - 1] in " \t":
            j -= 1
        op = _OPERATOR.search(text, max(0, j - 8), j)  # operators are short: look back a few characters
        if op is not None and j < i:  # "a + b": an operator, then spaces, then our run
            k = op.start()
            while k > 0 and text[k - 1] in " \t":
                k -= 1
        elif j < i and j > 0 and text[j - 1] in _TOKEN:  # "\log_2 8": a command, a space, its argument
            k = j
            while k > 0 and text[k - 1] in _TOKEN:
                k -= 1
            if text[k] != "\\":
                return i
            k = j
        else:
            return i
        if k == 0 or text[k - 1] not in _TOKEN:
            return i
        i = k


def _run_right(text: str, i: int) -> int:
    """End of the expression that starts before `i` (see `_run_left`)."""
    n = len(text)
    while True:
        while i < n and text[i] in _TOKEN:
            i += 1
        j = i
        while j < n and text[j] in " \t":
            j += 1
        op = _OPERATOR_AHEAD.match(text, j)
        if op is None:
            return i
        k = op.end()  # match() positions are absolute
        while k < n and text[k] in " \t":
            k += 1
        if k == n or text[k] not in _TOKEN:
            return i
        i = k


def _balance(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen [start, end) until its brackets balance (at most 200 characters each way)."""
    depth = sum((c in _OPEN) - (c in _CLOSE) for c in text[start:end])
    while depth < 0 and start > 0 and end - start < 400:
        start -= 1
        depth += (text[start] in _OPEN) - (text[start] in _CLOSE)
    while depth > 0 and end < len(text) and end - start < 400:
        depth += (text[end] in _OPEN) - (text[end] in _CLOSE)
        end += 1
    return start, end


def _right_of_equals(expr: str) -> str:
    """The part after the last `=` outside brackets ("x = 10^6" -> "10^6")."""
    depth, cut = 0, 0
    for i, c in enumerate(expr):
        depth += (c in _OPEN) - (c in _CLOSE)
        if c == "=" and depth == 0:
            cut = i + 1
    return expr[cut:]


# Alternatives: "$k = 3$ or $k = -3$", "x = 2 or x = 5", "$x = 1, x = 4$" (the same unknown each time)
_JOIN = re.compile(r"\s*(?:,\s*)?(?:or|and)\s*|\s*,\s*")  # between two `$...$` segments (12 chars at most)
_JOIN_TAIL = re.compile(r"\s*(?:,\s*)?\b(?:or|and)\s+$|\s*,\s+$")  # before a plain expression
_JOIN_WORD = re.compile(r"\\(?:text|mbox|mathrm)\{\s*(?:or|and)\s*\}|\\q?quad(?![A-Za-z])")
_ROOT = re.compile(r"([A-Za-z](?:_\{?\w{1,3}\}?)?)\s*=([^=]+)")


def _alternatives(parts: list[str]) -> str | None:
    """"3, -3" for parts ["k = 3", "k = -3"] (split at top-level commas and `\\text{ or }`): the values of one
    unknown, each given once; None unless there are two or more parts, all `v = value` for the same `v`."""
    pieces = []
    for part in parts:
        depth, cut, part = 0, 0, _JOIN_WORD.sub(",", part)
        for i, c in enumerate(part):
            depth += (c in _OPEN) - (c in _CLOSE)
            if c == "," and depth == 0:
                pieces.append(part[cut:i])
                cut = i + 1
        pieces.append(part[cut:])
    if len(pieces) < 2:
        return None
    roots = [_ROOT.fullmatch(p.strip().rstrip(".,;:?").strip("* \t")) for p in pieces]
    if any(m is None or not m.group(2).strip() for m in roots) or len({m.group(1) for m in roots}) != 1:
        return None
    return ", ".join(dict.fromkeys(m.group(2).strip() for m in roots))


def _math_alternatives(text: str, segs: list[str], spans: list[tuple[int, int]], k: int) -> str | None:
    """`_alternatives` of math segment `k` and the segments joined to it by "or", "and" or commas."""

    def joined(a: int, b: int) -> bool:
        return b - a <= 12 and _JOIN.fullmatch(text, a, b) is not None

    lo, hi = k, k
    while lo > 0 and k - lo < 10 and joined(spans[lo - 1][1], spans[lo][0]):
        lo -= 1
    while hi + 1 < len(segs) and hi - k < 10 and joined(spans[hi][1], spans[hi + 1][0]):
        hi += 1
    return _alternatives(segs[lo : hi + 1])


def _plain_alternatives(text: str, start: int, expr: str) -> str | None:
    """`_alternatives` of a plain expression starting at `start` and up to 9 before it joined by "or"/"and"."""
    parts = [expr]
    while len(parts) < 10:
        tail = _JOIN_TAIL.search(text, max(0, start - 12), start)
        if tail is None or tail.start() == 0 or text[tail.start() - 1] not in _TOKEN:
            break
        start = _run_left(text, tail.start())
        parts.insert(0, text[start : tail.start()])
    return _alternatives(parts) if len(parts) > 1 else None


def last_number(text: str | None) -> str | None:
    """The last-number fallback: the whole expression that holds the last number (see the module docstring);
    None when the text holds a format anchor or no number."""
    if not text or _ANCHOR.search(text):
        return None
    found = None
    for found in _NUMBER.finditer(text):
        pass
    if found is None:
        return None
    start, end = found.span()
    segs, spans, k = [], [], None
    for seg in _MATH.finditer(text):
        g = next(j for j in (1, 2, 3) if seg.group(j) is not None)
        if seg.start(g) <= start and end <= seg.end(g):
            k = len(segs)
        segs.append(seg.group(g))
        spans.append(seg.span())
    if k is not None:
        expr = segs[k]
        alt = _math_alternatives(text, segs, spans, k)
    else:
        start, end = _balance(text, _run_left(text, start), _run_right(text, end))
        start, end = _run_left(text, start), _run_right(text, end)
        expr = text[start:end]
        if expr.endswith("!") and re.match(r"\s*(?:$|\n|[A-Z])", text[end:]):
            expr = expr[:-1]  # "He has 5!": an exclamation mark, not a factorial
        alt = _plain_alternatives(text, start, expr)
    if alt is not None:
        return alt
    for _ in range(2):  # trailing punctuation and markdown bold (`**42**.`), in either order
        expr = expr.strip().rstrip(".,;:?").strip("* \t")
    expr = _right_of_equals(expr).strip()
    return expr or None


def _blank_to_null(e: pl.Expr) -> pl.Expr:
    e = e.str.strip_chars()
    return pl.when(e.str.len_chars() > 0).then(e)


def _unbold(e: pl.Expr) -> pl.Expr:
    """Markdown bold around an answer dropped: "**42**." -> "42.", "** 42" -> "42" (not the `**` of "2**3")."""
    e = e.str.strip_chars().str.replace(r"^\*+\s*", "")
    return e.str.replace_all(r"\*\*([\s.,;:!?]|$)", "$1").str.strip_chars()


def _sentence(e: pl.Expr) -> pl.Expr:
    """Cut a phrase at its end: `$...$` if it starts with `$`, else before the first '. ' or final '.'.
    Markdown bold is dropped first; "$a$ or $b$" stays whole, as "a, b" (both go to the verifier)."""
    e = _unbold(e).str.replace_all(r"\$\s*(?:,\s*)?or\s+\$", ", ")
    dollars = e.str.extract(r"^\$((?:\\\$|[^$])*)\$", 1)  # `\$` inside is a dollar sign, not the end
    e = pl.coalesce(dollars, e.str.replace(r"\.(?:\s.*)?$", "").str.strip_chars())
    return e.str.replace(r"^(?:[-+*/×÷()\d\s.,]+=\s*)+(\S)", "$1")  # "12 - 5 = 7" -> "7"


def _boxed_in(e: pl.Expr) -> pl.Expr:
    """last_boxed of the rows of `e` holding a box (Python, on those rows only), null elsewhere."""
    return (
        pl.when(e.str.contains(_HAS_BOX))
        .then(e)
        .map_elements(last_boxed, return_dtype=pl.String, skip_nulls=True)
    )


def _hedged_in(e: pl.Expr) -> pl.Expr:
    """The different boxed answers of the rows of `e` that box more than one (`hedged_boxes`), joined by " | ";
    null elsewhere (Python only on the rows with two boxes or more)."""
    return (
        pl.when(e.str.count_matches(_HAS_BOX) >= 2)
        .then(e)
        .map_elements(lambda t: " | ".join(hedged_boxes(t) or []) or None, return_dtype=pl.String, skip_nulls=True)
    )


def _tag(t: pl.Expr) -> pl.Expr:
    tag = _blank_to_null(t.str.extract(_TAG, 1))  # a hedge inside the tag: null here, "hedged" next
    return _blank_to_null(pl.when(_hedged_in(tag).is_null()).then(pl.coalesce(_boxed_in(tag), tag)))


# (method, a literal (case-insensitive) the text must contain for the rule to apply, the rule)
LADDER = (
    ("answer_tag", "</answer>", _tag),
    ("hedged", "box", _hedged_in),
    ("boxed", None, lambda t: _blank_to_null(_boxed_in(t))),
    ("hashes", "####", lambda t: _blank_to_null(_unbold(t.str.extract(_HASHES, 1)))),
    ("answer_is", "answer is", lambda t: _blank_to_null(_sentence(t.str.extract(_ANSWER_IS, 1)))),
    ("final_answer_is", "final answer", lambda t: _blank_to_null(_sentence(t.str.extract(_FINAL_IS, 1)))),
    ("last_number", None, lambda t: _blank_to_null(t.map_elements(last_number, return_dtype=pl.String))),
)


def extract_frame(df: pl.DataFrame, text: str = "completion") -> pl.DataFrame:
    """`df` with `answer` (String, null if none), `method` (one of METHODS) and `fallback` (Boolean) added.

    Each rule runs only on the rows that no earlier rule answered and that contain its literal, so a batch of
    student-format completions costs one regex per row."""
    rest = df.select(pl.col(text).alias("_t")).with_row_index("_i").filter(pl.col("_t").is_not_null())
    found = []
    for name, needle, rule in LADDER:
        if rest.height == 0:
            break
        cand = rest if needle is None else rest.filter(pl.col("_t").str.contains(f"(?i){re.escape(needle)}"))
        hit = cand.select("_i", rule(pl.col("_t")).alias("answer")).filter(pl.col("answer").is_not_null())
        found.append(hit.with_columns(method=pl.lit(name)))
        rest = rest.join(hit.select("_i"), on="_i", how="anti", maintain_order="left")
    hits = (
        pl.concat(found)
        if found
        else pl.DataFrame(schema={"_i": pl.UInt32, "answer": pl.String, "method": pl.String})
    )
    idx = pl.DataFrame({"_i": pl.int_range(df.height, dtype=pl.UInt32, eager=True)})
    res = idx.join(hits, on="_i", how="left", maintain_order="left")
    method = res["method"].fill_null("none")
    return df.with_columns(
        pl.when(~method.is_in(NO_ANSWER_METHODS)).then(res["answer"]).alias("answer"),
        method.alias("method"),
        method.is_in(FALLBACK_METHODS).alias("fallback"),
    )


def extract_answer(text: str | None) -> tuple[str | None, str]:
    """(answer, method) of one text; see the module docstring for the ladder."""
    row = extract_frame(pl.DataFrame({"completion": [text]}, schema={"completion": pl.String})).row(0)
    return row[1], row[2]
