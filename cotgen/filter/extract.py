"""Answer extraction: pull a final answer out of a solution or a model completion.

Pure string functions, no model and no sympy. `last_boxed` reads MATH-style gold answers and completions that
follow the `\\boxed{}` convention.
"""

from __future__ import annotations

import re

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BARE = re.compile(r"\s*([^\s${}]+)")


def last_boxed(text: str | None) -> str | None:
    """Content of the last `\\boxed{...}` or `\\fbox{...}` in `text`, stripped; None if there is none.

    Braces are matched, so `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`; escaped `\\{` and `\\}` do not count.
    `\\boxed 5` (no braces, as in a few MATH solutions) gives the token up to the next space or `$`.
    Only the last box counts: if it is never closed (a truncated completion), the answer is None, not an
    earlier box.
    """
    if not text:
        return None
    starts = [m.end() for m in _BOX.finditer(text)]
    if not starts:
        return None
    i = starts[-1]
    while i < len(text) and text[i].isspace():
        i += 1
    if i == len(text) or text[i] != "{":
        bare = _BARE.match(text, i)
        token = bare.group(1).rstrip(".,;") if bare else ""
        return token or None
    depth, j = 0, i
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2  # skip the escaped character: \{ \} \\
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
        j += 1
    return None
