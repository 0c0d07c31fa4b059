"""Prompt templates: whole-render golden strings, StrictUndefined, exemplars, stop strings, format regex."""

from __future__ import annotations

import re

import jinja2
import pytest

from cotgen import prompts
from cotgen.errors import CotgenError

STUDENT_INSTRUCTION = (
    "You are given a problem. Think about the problem step by step and write your reasoning between"
    " <reasoning> and </reasoning>. Then write only the final answer between <answer> and </answer>: just the"
    " value asked for (a number, or a LaTeX expression without $ signs), with no explanation."
)
TEACHER_INSTRUCTION = (
    "Solve the following problem. Reason step by step and show every calculation, so that a student can"
    " follow and check each step. Write the whole reasoning between <reasoning> and </reasoning>. Then write"
    " only the final answer between <answer> and </answer>: just the value asked for (a number, or a LaTeX"
    " expression without $ signs), with no units and no explanation. Use each tag exactly once and write"
    " nothing before <reasoning> or after </answer>."
)
NATALIA = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
    " How many clips did Natalia sell altogether in April and May?"
)


# ---- golden renders ------------------------------------------------------------------------------


def test_student_prompt_chat_golden():
    expected = (
        "<start_of_turn>user\n"
        "You are given a problem. Think about the problem step by step and write your reasoning between"
        " <reasoning> and </reasoning>. Then write only the final answer between <answer> and </answer>:"
        " just the value asked for (a number, or a LaTeX expression without $ signs), with no explanation.\n"
        "\n"
        "Question: What is 12*7?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert prompts.student_prompt("  What is 12*7?\n") == expected
    assert prompts.student_prompt("What is 12*7?", chat=True) == expected


def test_student_prompt_plain_golden():
    expected = f"{STUDENT_INSTRUCTION}\n\nQuestion: What is 12*7?\n"
    assert prompts.student_prompt("What is 12*7?\n\n", chat=False) == expected


def test_student_chat_is_the_plain_prompt_in_one_user_turn():
    plain = prompts.student_prompt(NATALIA, chat=False)
    expected = f"<start_of_turn>user\n{plain.strip()}<end_of_turn>\n<start_of_turn>model\n"
    assert prompts.student_prompt(NATALIA) == expected


def test_student_target_golden():
    assert prompts.student_target("48 / 2 = 24. 48 + 24 = 72.", "72") == (
        "<reasoning>48 / 2 = 24. 48 + 24 = 72.</reasoning>\n<answer>72</answer>"
    )
    # fields are trimmed, inner newlines kept, no trailing newline
    assert prompts.student_target("\n a\nb \n", " \\frac{1}{2}\n") == (
        "<reasoning>a\nb</reasoning>\n<answer>\\frac{1}{2}</answer>"
    )


def test_teacher_prompt_chat_golden():
    expected = (
        "<start_of_turn>user\n"
        "Solve the following problem. Reason step by step and show every calculation, so that a student"
        " can follow and check each step. Write the whole reasoning between <reasoning> and </reasoning>."
        " Then write only the final answer between <answer> and </answer>: just the value asked for (a"
        " number, or a LaTeX expression without $ signs), with no units and no explanation. Use each tag"
        " exactly once and write nothing before <reasoning> or after </answer>.\n"
        "\n"
        "Question: What is 12*7?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert prompts.teacher_prompt("What is 12*7?") == expected
    plain = prompts.render("teacher_cot", question="What is 12*7?")
    assert plain == f"{TEACHER_INSTRUCTION}\n\nQuestion: What is 12*7?\n"


def test_few_shot_gsm8k_golden():
    expected = (
        "Question: There are 15 trees in the grove. Grove workers will plant trees in the grove today."
        " After they are done, there will be 21 trees. How many trees did the grove workers plant today?\n"
        "<reasoning>There are 15 trees originally. Then there were 21 trees after some more were planted."
        " So there must have been 21 - 15 = 6.</reasoning>\n"
        "<answer>6</answer>\n"
        "\n"
        "Question: If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the"
        " parking lot?\n"
        "<reasoning>There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5.</reasoning>\n"
        "<answer>5</answer>\n"
        "\n"
        "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in"
        " May. How many clips did Natalia sell altogether in April and May?\n"
    )
    assert prompts.teacher_prompt(NATALIA + "\n", style="few_shot", shots="gsm8k", k=2) == expected


def test_few_shot_math_golden():
    expected = (
        "Question: Find the domain of the expression $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.\n"
        "<reasoning>The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$,"
        " so $x\\ge2$, and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so"
        " $5-x>0$, which gives $x<5$. Therefore, the domain of the expression is $\\boxed{[2,5)}$."
        "</reasoning>\n"
        "<answer>[2,5)</answer>\n"
        "\n"
        "Question: What is $\\sqrt{16}$?\n"
    )
    assert prompts.teacher_prompt("What is $\\sqrt{16}$?", style="few_shot", shots="math", k=1) == expected


def test_few_shot_zero_shots_is_just_the_question():
    assert prompts.teacher_prompt("Q?", style="few_shot", k=0) == "Question: Q?\n"


def test_gemma_turn_golden():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "  Hi\n"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "2+2?"},
    ]
    assert prompts.gemma_chat(messages) == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\n2+2?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    sft = [{"role": "user", "content": "2+2?"}, {"role": "model", "content": "4"}]
    assert prompts.render("gemma_turn", messages=sft, add_generation_prompt=False) == (
        "<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n"
    )
    assert "<bos>" not in prompts.gemma_chat(messages)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "model", "content": "a"}],
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
    ],
)
def test_gemma_turn_rejects_bad_roles(messages):
    with pytest.raises(ValueError):
        prompts.gemma_chat(messages)


# ---- StrictUndefined and errors ------------------------------------------------------------------


def test_missing_variable_raises():
    with pytest.raises(jinja2.UndefinedError):
        prompts.render("student")
    with pytest.raises(jinja2.UndefinedError):
        prompts.render("student_target", reasoning="r")
    with pytest.raises(jinja2.UndefinedError):
        prompts.render("gemma_turn", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(jinja2.UndefinedError):
        prompts.render("few_shot", shots=[{"question": "q", "reasoning": "r"}], question="q")


def test_unknown_names_list_the_known_ones():
    with pytest.raises(CotgenError, match="known: gsm8k, math"):
        prompts.load_shots("aime")
    with pytest.raises(CotgenError, match="student.jinja"):
        prompts.render("nope")
    with pytest.raises(CotgenError, match="chat, few_shot"):
        prompts.teacher_prompt("q", style="zero_shot")
    with pytest.raises(CotgenError, match="has 4 exemplars"):
        prompts.load_shots("math", k=5)


def test_render_accepts_name_with_or_without_suffix():
    assert prompts.render("student.jinja", question="q") == prompts.render("student", question="q")
    assert set(prompts.templates()) >= {
        "gemma_turn.jinja", "student.jinja", "student_target.jinja", "teacher_cot.jinja", "few_shot.jinja"
    }


# ---- exemplars -----------------------------------------------------------------------------------


def _last_boxed(text: str) -> str:
    start = text.rindex("\\boxed{") + len("\\boxed{")
    depth = 1
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    raise AssertionError("unbalanced \\boxed{")


def test_shot_counts_and_slicing():
    assert len(prompts.load_shots("gsm8k")) == 8
    assert len(prompts.load_shots("math")) == 4
    assert prompts.load_shots("gsm8k", k=3) == prompts.load_shots("gsm8k")[:3]
    assert prompts.load_shots("gsm8k", k=0) == []
    shots = prompts.load_shots("gsm8k")
    shots[0]["answer"] = "mutated"
    assert prompts.load_shots("gsm8k")[0]["answer"] == "6"


def test_gsm8k_shots_are_wei_et_al():
    shots = prompts.load_shots("gsm8k")
    assert shots[0]["question"].startswith("There are 15 trees in the grove.")
    assert shots[-1]["question"].startswith("Olivia has $23.")
    assert [s["answer"] for s in shots] == ["6", "5", "39", "8", "9", "29", "33", "8"]
    for s in shots:
        assert re.fullmatch(r"-?\d+", s["answer"])
        assert re.findall(r"\d+", s["reasoning"])[-1] == s["answer"]  # the reasoning ends on its answer
        assert "The answer is" not in s["reasoning"]


def test_gsm8k_shot_arithmetic_is_right():
    for s in prompts.load_shots("gsm8k"):
        for a, op, b, c in re.findall(r"(\d+) ([-+*x]) (\d+) (?:=|is) (\d+)", s["reasoning"]):
            a, b, c = int(a), int(b), int(c)
            assert {"+": a + b, "-": a - b, "*": a * b, "x": a * b}[op] == c, s["reasoning"]


def test_math_shots_are_minerva():
    shots = prompts.load_shots("math")
    assert [s["answer"] for s in shots] == ["[2,5)", "24", "16", "-\\frac{2}{3}"]
    for s in shots:
        assert _last_boxed(s["reasoning"]) == s["answer"]
        assert "$" not in s["answer"]
        assert "Final Answer" not in s["reasoning"]
    # the align* environments carry real LaTeX line breaks (\\), not lm-eval's backslash-newline
    assert "30n&=480\\\\\n" in shots[2]["reasoning"]
    assert "6x-4y&=a,\\\\\n" in shots[3]["question"]


@pytest.mark.parametrize("name", ["gsm8k", "math"])
def test_shots_render_to_the_student_format(name):
    for s in prompts.load_shots(name):
        target = prompts.student_target(s["reasoning"], s["answer"])
        m = prompts.STUDENT_FORMAT_RE.match(target)
        assert m and m["answer"] == s["answer"] and m["reasoning"] == s["reasoning"].strip()


# ---- few-shot ending and stop strings ------------------------------------------------------------


@pytest.mark.parametrize("name", ["gsm8k", "math"])
def test_few_shot_ends_with_the_question_and_stops_never_fire_inside_exemplars(name):
    prompt = prompts.teacher_prompt(NATALIA, style="few_shot", shots=name, k=None)
    assert prompt.endswith(f"\n\nQuestion: {NATALIA}\n")
    shots = prompts.load_shots(name)
    assert prompt.count("Question:") == len(shots) + 1
    for s in shots:
        for field in ("question", "reasoning", "answer"):
            for stop in prompts.FEW_SHOT_STOP:
                assert stop not in s[field]
        # each exemplar's completion, as a model would write it, is cut by the stops exactly at its end
        completion = prompts.student_target(s["reasoning"], s["answer"])
        assert completion in prompt
        assert prompts.truncate_at_stop(completion + "\n\nQuestion: next one") == completion


def test_few_shot_stop_strings():
    assert prompts.FEW_SHOT_STOP == ("\n\nQuestion:", "Question:")
    assert prompts.truncate_at_stop("<reasoning>r</reasoning>\n<answer>1</answer>\nQuestion: x") == (
        "<reasoning>r</reasoning>\n<answer>1</answer>\n"
    )
    assert prompts.truncate_at_stop("no stop here") == "no stop here"


def test_constants():
    assert prompts.GEMMA_STOP_TOKEN_IDS == (1, 106)
    assert prompts.PROMPT_STYLES == ("chat", "few_shot")


# ---- STUDENT_FORMAT_RE ---------------------------------------------------------------------------


def test_format_regex_accepts_a_good_completion():
    good = "<reasoning>48 / 2 = 24.\n48 + 24 = 72.</reasoning>\n<answer>72</answer>"
    m = prompts.STUDENT_FORMAT_RE.match(good)
    assert m and m["reasoning"] == "48 / 2 = 24.\n48 + 24 = 72." and m["answer"] == "72"
    # whitespace around and between the blocks is allowed (samplers leave "\n\n" before a stop string)
    assert prompts.STUDENT_FORMAT_RE.match("\n <reasoning> r </reasoning><answer> 1 </answer>\n\n")
    assert prompts.STUDENT_FORMAT_RE.match("<reasoning>a < b, so x<1</reasoning>\n<answer>x<1</answer>")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "48 + 24 = 72",
        "<answer>72</answer>",  # no reasoning
        "<reasoning>48 + 24 = 72</reasoning>",  # no answer
        "<reasoning>48 + 24 = 72\n<answer>72</answer>",  # reasoning never closed
        "<reasoning>48 + 24 = 72</reasoning>\n<answer>72",  # answer never closed
        "<answer>72</answer>\n<reasoning>48 + 24 = 72</reasoning>",  # answer before reasoning
        "<reasoning>a</reasoning>\n<reasoning>b</reasoning>\n<answer>72</answer>",  # doubled reasoning
        "<reasoning>a</reasoning>\n<answer>7</answer>\n<answer>72</answer>",  # doubled answer
        "<reasoning>a <reasoning>b</reasoning> c</reasoning>\n<answer>72</answer>",  # nested
        "<reasoning>a <answer>7</answer></reasoning>\n<answer>72</answer>",  # answer tag inside reasoning
        "<reasoning></reasoning>\n<answer>72</answer>",  # empty reasoning
        "<reasoning> \n </reasoning>\n<answer>72</answer>",  # blank reasoning
        "<reasoning>48 + 24 = 72</reasoning>\n<answer></answer>",  # empty answer
        "<reasoning>48 + 24 = 72</reasoning>\n<answer>  </answer>",  # blank answer
        "Sure! <reasoning>r</reasoning>\n<answer>72</answer>",  # text before
        "<reasoning>r</reasoning>\n<answer>72</answer> I hope it is correct.",  # text after
        "<reasoning>r</reasoning> so <answer>72</answer>",  # text between
        "<Reasoning>r</Reasoning>\n<Answer>72</Answer>",  # tags are case-sensitive
    ],
)
def test_format_regex_rejects(text):
    assert prompts.STUDENT_FORMAT_RE.match(text) is None


def test_format_regex_is_linear_on_long_failures():
    # a quadratic pattern would take minutes on these; this one scans each once
    assert prompts.STUDENT_FORMAT_RE.match("<reasoning>" + "a " * 100_000) is None
    assert prompts.STUDENT_FORMAT_RE.match("<reasoning>r</reasoning><answer>" + "1 " * 100_000) is None
