"""Answer extraction: the ladder's order, the method recorded per row, blanks, fallbacks, strict mode."""

from __future__ import annotations

import polars as pl
import pytest

from cotgen.verify.extract import METHODS, extract_answer, extract_frame, last_boxed


@pytest.mark.parametrize(
    "text, answer, method",
    [
        ("<reasoning>48/2 = 24</reasoning>\n<answer> 72 </answer>", "72", "answer_tag"),
        ("<answer>\\boxed{\\frac{1}{2}}</answer>", "\\frac{1}{2}", "answer_tag"),  # box inside the tag
        ("<answer>1</answer> then <answer>2</answer>", "2", "answer_tag"),  # the last tag
        ("so \\boxed{\\frac{1}{2}} and #### 7", "\\frac{1}{2}", "boxed"),  # boxed before ####
        ("first \\boxed{1}, finally \\boxed{\\{1, 2\\}}", "\\{1, 2\\}", "boxed"),
        ("<answer>  </answer> \\boxed{5}", "5", "boxed"),  # a blank tag is no answer: the ladder goes on
        ("48 + 24 = 72\n#### 1,080\nextra", "1,080", "hashes"),
        ("#### 3\n#### 4", "4", "hashes"),
        ("The answer is 18. It was easy.", "18", "answer_is"),
        ("the answer is: $\\frac{1}{2}$. I hope", "\\frac{1}{2}", "answer_is"),
        ("So the answer is 3.5 dollars", "3.5 dollars", "answer_is"),
        ("Final Answer: The final answer is $5$. I hope it is correct.", "5", "final_answer_is"),
        ("My final answer: 12", "12", "final_answer_is"),
        ("we get 3.5 and then 18.", "18", "last_number"),
        ("costs 1,000 in total", "1,000", "last_number"),
        ("down to -7", "-7", "last_number"),
        ("x is .5", ".5", "last_number"),
        ("no numbers here", None, "none"),
        ("", None, "none"),
        (None, None, "none"),
        ("\\boxed{unclosed", None, "none"),  # a truncated box is not an answer (and has no number)
    ],
)
def test_ladder(text, answer, method):
    assert extract_answer(text) == (answer, method)


def test_frame_records_method_and_fallback_per_row():
    df = pl.DataFrame({"completion": ["<answer>3</answer>", "it is 4", "nothing", "#### 5"]})
    out = extract_frame(df)
    assert out["answer"].to_list() == ["3", "4", None, "5"]
    assert out["method"].to_list() == ["answer_tag", "last_number", "none", "hashes"]
    assert out["fallback"].to_list() == [False, True, False, False]
    assert set(out["method"]) <= set(METHODS)


def test_last_boxed_behaviour_kept():
    assert last_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("\\boxed {17}") == "17"
    assert last_boxed("\\boxed 2$") == "2"
    assert last_boxed("\\fbox{3}") == "3"
    assert last_boxed("\\boxed{1} \\boxed{2") is None
    assert last_boxed("\\boxed{\\{a\\}}") == "\\{a\\}"
    assert last_boxed(None) is None
