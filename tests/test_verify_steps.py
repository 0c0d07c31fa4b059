"""The step checker (cotgen/verify/steps.py): every supported form right and wrong, what stays unchecked, GSM8K's
own calculator notes, deliberately broken ones, and hostile texts."""

import json
import random
import re
import time
from fractions import Fraction

import pytest

from cotgen.verify.steps import RIGHT, UNCHECKED, WRONG, check_work


def verdicts(text):
    return [s.verdict for s in check_work(text).steps]


@pytest.mark.parametrize("text,expected", [
    # chains, read pairwise
    ("8 + 2 + 7 = 17 + 3 = 20", [RIGHT, RIGHT]),
    ("8 + 2 + 7 = 15 + 7 = 22", [WRONG, RIGHT]),
    ("6 + 0 + 5 = 11 + 0 = 11", [RIGHT, RIGHT]),
    ("8 + 2 = 10 + 7 = 17", [RIGHT, RIGHT]),  # a running total
    ("<reasoning>2 + 3 = 5</reasoning><answer>5 + 1 = 7</answer>", [RIGHT, WRONG]),  # tags are not words
    ("5 + 5 = 5 + 1 = 6", [WRONG, RIGHT]),
    # calculator notes; the prose copy of a note is the same claim
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.", [RIGHT]),
    ("She sold <<48/2=25>>25 clips.", [WRONG]),
    ("<<560//10=56>>", [RIGHT]),
    # prose
    ("x is 3 + 4 = 7", [RIGHT]),
    ("3 + 4 is 7 and 7 * 2 equals 15", [RIGHT, WRONG]),
    ("12 divided by 4 = 3, and 3 times 5 = 16", [RIGHT, WRONG]),
    # numbers
    ("$1,234 + $766 = $2,000", [RIGHT]),
    ("$1,234 + $766 = $1,990", [WRONG]),
    ("18 000 / 3 = 6 000", [RIGHT]),
    ("1.5 * 4 = 6.0", [RIGHT]),
    (".5 * 8 = 4", [RIGHT]),
    ("1/2 + 1/4 = 3/4", [RIGHT]),
    ("28 / 1/5 = 140", [RIGHT]),  # a tight fraction is one number
    ("2 + 1/2 = 2 1/2", [RIGHT]),  # a mixed number
    ("17/3 = 5 and 2/3", [RIGHT]),
    ("\\frac{1}{2} + \\frac{1}{4} = \\frac{3}{4}", [RIGHT]),
    ("\\frac{1}{2} + \\frac{1}{4} = \\frac{2}{3}", [WRONG]),
    # percentages
    ("20% of 50 = 10", [RIGHT]),
    ("20% of 50 = 12", [WRONG]),
    ("10 / 50 * 100 = 20%", [RIGHT]),
    ("9/27 * 100% = 33.333%", [RIGHT]),
    ("100% - 20% = 80%", [RIGHT]),
    ("50 + 10% = 55", [UNCHECKED]),
    # rounding at the printed precision; integers exact
    ("10/3 = 3.33", [RIGHT]),
    ("2/3 = 0.66", [RIGHT]),
    ("7/2 = 3.4", [WRONG]),
    ("7/2 = 3", [WRONG]),
    ("10/3 ≈ 3.3", [RIGHT]),
    ("10/3 ≈ 4", [WRONG]),
    # operators
    ("2(3 + 4) = 14", [RIGHT]),
    ("(3 + 4 = 7)", [RIGHT]),
    ("5 x 3 = 15", [RIGHT]),
    ("5 × 3 = 16", [WRONG]),
    ("2 ** 10 = 1024", [RIGHT]),
    ("2^10 = 1000", [WRONG]),
    ("3 + 4 = **7**", [RIGHT]),
    ("3 + 4 = \\boxed{7}", [RIGHT]),
    ("$3 \\times 4 = 12$", [RIGHT]),
    ("12 − 5 = 7", [RIGHT]),
    # units
    ("5 apples + 3 apples = 8 apples", [RIGHT]),
    ("5 apples + 3 apples = 9 apples", [WRONG]),
    ("2 * 60 = 120 minutes", [RIGHT]),
    ("2 hours * 60 = 100 minutes", [UNCHECKED]),  # a unit changes name: not decided
    ("60 students x 2/3 = 40 students", [RIGHT]),
    # unknowns and labels: never wrong
    ("3x + 2 = 11", [UNCHECKED]),
    ("x - 3 = 5", [UNCHECKED]),
    ("2 = 10y", [UNCHECKED]),
    ("x = 3 + 4 = 7", [RIGHT]),
    ("Day 1 = 5 apples", [UNCHECKED]),
    ("Area of 4 bedrooms = 121 * 4 = 484", [UNCHECKED, RIGHT]),
    ("The sun sets at 6:00+48=6:48 PM", [UNCHECKED]),
    ("5/0 = 0", [UNCHECKED]),
    # no claim at all
    ("4 + 0.", []),
    ("The answer is 7.", []),
    ("5! = 120", []),
])
def test_verdicts(text, expected):
    assert verdicts(text) == expected, check_work(text).steps


def test_new_line_ends_an_expression():
    text = "Oranges = 12 * 150 = <<12*150=1800>>1800\nNectarines = 16 * 30 = <<16*30=480>>480"
    assert verdicts(text) == [RIGHT, RIGHT]


def test_work_counts_and_ok():
    work = check_work("3 + 4 = 7, then 7 * 2 = 15, and x - 1 = 6")
    assert (work.right, work.wrong, work.unchecked) == (1, 1, 1)
    assert not work.ok()
    empty = check_work("Four plus nought.")
    assert not empty.ok() and empty.ok(need_step=False)
    assert check_work("3 + 4 = 7").ok()
    assert check_work(None).steps == () and check_work("").steps == ()


def _gsm8k(data_dir):
    return [json.loads(line) for line in (data_dir / "gsm8k" / "train.jsonl").read_text().splitlines()]


def test_gsm8k_calculator_notes_check_out(data_dir):
    """Every `<<expr=value>>` note of GSM8K train: all right (the checker reads GSM8K's own arithmetic)."""
    notes = [m.group(0) for row in _gsm8k(data_dir)[:2000] for m in re.finditer(r"<<[^<>]*>>", row["answer"])]
    counts = {RIGHT: 0, WRONG: 0, UNCHECKED: 0}
    for note in notes:
        for step in check_work(note).steps:
            counts[step.verdict] += 1
    assert counts[RIGHT] >= 0.999 * len(notes) and counts[WRONG] == 0, counts


def test_broken_calculator_notes_are_wrong(data_dir):
    """Each reference solution with one computed note's result changed (+1, x10 or -1, written the way the note
    writes it): the checker finds a wrong step in every one."""
    rng = random.Random(0)
    found = total = 0
    for row in _gsm8k(data_dir)[:500]:
        notes = [m for m in re.finditer(r"<<([^<>=]*[-+*/][^<>=]*)=(\d+(?:\.\d+)?)>>", row["answer"])]
        if not notes:
            continue
        m = rng.choice(notes)
        value, places = Fraction(m.group(2)), len(m.group(2).partition(".")[2])
        broken = rng.choice([value + 1, value * 10, value - 1])
        text = row["answer"][:m.start()] + f"<<{m.group(1)}={float(broken):.{places}f}>>" + row["answer"][m.end():]
        total += 1
        found += check_work(text).wrong > 0
    assert total > 450 and found == total, (found, total)


@pytest.mark.parametrize("text", [
    "(" * 5000 + "1" + ")" * 5000 + " = 1",
    "9^9^9^9^9^9 = 1",
    "9" * 5000 + " + 1 = 2",
    "1 + " * 20000 + "1 = 2",
    "= " * 30000,
    "2 ^ 64 ^ 64 = 3",
    "(1+(1+(1+(1+(1+" * 2000 + " = 1",
    "<<" + "1+" * 100 + "1=2>>" * 3000,
    "1,000,000,000,000,000,000,000,000,000,000,000,000,000,000,000 * 10^60 = 1",
])
def test_hostile_texts_are_fast(text):
    start = time.perf_counter()
    work = check_work(text)
    assert time.perf_counter() - start < 2.0
    assert work.wrong <= 1 and len(work.steps) <= 256
