"""Prompts: Jinja2 templates shipped as package data, rendered with StrictUndefined (a missing variable
raises).

One student prompt (`student.jinja`) and one student completion (`student_target.jinja`) are shared by SFT,
GRPO and eval, and the Gemma 3 turn (`gemma_turn.jinja`) wraps them the same way everywhere: the text the
student is trained on and the text it is asked at inference come from the same files, so they cannot drift
(tunix #943 saw 30-point GSM8K swings from prompt and extraction mismatch). Teachers are asked for the same
format (`teacher_cot.jinja` for instruction-tuned models, `few_shot.jinja` for base models), so kept traces
become training targets with no reformatting, and `STUDENT_FORMAT_RE` checks all of them.

Completion format (`student_target`): `<reasoning>R</reasoning>\\n<answer>A</answer>`, R and A trimmed,
nothing after `</answer>`. The end of the turn is a token, not text: trainers append `<end_of_turn>` (106) as
an id and samplers stop on `GEMMA_STOP_TOKEN_IDS`.

Exemplars (`shots/*.jsonl`, {question, reasoning, answer}): `gsm8k` is the 8-shot chain-of-thought set of
Wei et al. (2022) as lm-eval's gsm8k-cot ships it, with the closing "The answer is N." moved into `answer`;
`math` is the 4-shot Minerva set (Lewkowycz et al. 2022, lm-eval's minerva_math) with the "Final Answer: ...
I hope it is correct." line moved into `answer` (bare LaTeX, no `$`), `\\boxed{}` kept in the reasoning,
and lm-eval's stray `}` and double space after the first problem removed.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import jinja2

from cotgen.errors import CotgenError, InputError

_DIR = Path(__file__).parent

PROMPT_STYLES = ("chat", "few_shot")

# Gemma 3 ids that end a model turn: <eos> (1) and <end_of_turn> (106). Base models end with <eos> if at all.
GEMMA_STOP_TOKEN_IDS = (1, 106)

# Stop strings for base models given `few_shot.jinja` (or the plain student prompt): every exemplar and the
# question start with "Question:", so a base model that has finished its answer goes on to invent the next
# one. "\n\nQuestion:" is the boundary the exemplars teach and is listed first so that backends reporting
# the first listed match (vLLM) cut before the blank line; bare "Question:" also catches a model that skips
# the blank line. "</answer>" is deliberately absent: most backends drop the stop string from the output,
# which would lose the closing tag that STUDENT_FORMAT_RE requires. No exemplar contains "Question:" (tested).
FEW_SHOT_STOP: tuple[str, ...] = ("\n\nQuestion:", "Question:")

_TAG = r"</?(?:reasoning|answer)>"
_NO_TAG = rf"(?:(?!{_TAG}).)"
# The strict completion format, on the whole text: optional whitespace, one <reasoning> block, optional
# whitespace, one <answer> block, optional whitespace; nothing else. Neither tag may repeat or nest, and
# neither block may be empty or blank (an empty answer must never earn reward). Groups "reasoning" and
# "answer" come unstripped. Use `.match(text)`. Greedy runs of non-tag characters keep it linear in length.
STUDENT_FORMAT_RE = re.compile(
    rf"\A\s*<reasoning>(?!\s*</reasoning>)(?P<reasoning>{_NO_TAG}*)</reasoning>"
    rf"\s*<answer>(?!\s*</answer>)(?P<answer>{_NO_TAG}*)</answer>\s*\Z",
    re.DOTALL,
)


# A trace that only forgot `</reasoning>` (the base 270M does this in about half of its right answers): one
# non-blank reasoning block opened and never closed, then one answer block. `cotgen filter --repair-format` keeps
# such traces; the student's target is rebuilt with `student_target`, so the slip never reaches the student.
UNCLOSED_REASONING_RE = re.compile(
    rf"\A\s*<reasoning>(?!\s*<answer>)(?P<reasoning>{_NO_TAG}*)"
    rf"<answer>(?!\s*</answer>)(?P<answer>{_NO_TAG}*)</answer>\s*\Z",
    re.DOTALL,
)


def _raise_exception(message: str) -> None:
    raise ValueError(message)


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_DIR),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)
_ENV.globals["raise_exception"] = _raise_exception


def templates() -> list[str]:
    """Names of the shipped templates."""
    return sorted(p.name for p in _DIR.glob("*.jinja"))


def render(template: str, **variables) -> str:
    """Render a shipped template ("student" or "student.jinja"); a variable it uses but is not given raises
    jinja2.UndefinedError."""
    name = template if template.endswith(".jinja") else f"{template}.jinja"
    if name not in templates():
        raise CotgenError(f"unknown prompt template {template!r}; known: {', '.join(templates())}")
    return _ENV.get_template(name).render(**variables)


def shot_sets() -> list[str]:
    """Names of the shipped exemplar sets."""
    return sorted(p.stem for p in (_DIR / "shots").glob("*.jsonl"))


@lru_cache(maxsize=None)
def _read_shots(name: str) -> tuple[dict, ...]:
    path = _DIR / "shots" / f"{name}.jsonl"
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line)
        for field in ("question", "reasoning", "answer"):
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise InputError(path, "must be a non-empty string", line=line_no, field=field)
        rows.append(row)
    return tuple(rows)


def load_shots(name: str, k: int | None = None) -> list[dict]:
    """The first `k` exemplars (all when None) of a shipped set, as fresh {question, reasoning, answer}
    dicts."""
    if name not in shot_sets():
        raise CotgenError(f"unknown exemplar set {name!r}; known: {', '.join(shot_sets())}")
    shots = _read_shots(name)
    if k is not None and not 0 <= k <= len(shots):
        raise CotgenError(f"exemplar set {name!r} has {len(shots)} exemplars; asked for k={k}")
    return [dict(s) for s in shots[:k]]


def gemma_chat(messages: list[dict], *, add_generation_prompt: bool = True) -> str:
    """Messages in the Gemma 3 turn format, without <bos> (the tokenizer adds it)."""
    return render("gemma_turn", messages=messages, add_generation_prompt=add_generation_prompt)


def student_prompt(question: str, *, chat: bool = True) -> str:
    """The student prompt used by SFT, GRPO and eval alike: one template, so training and inference cannot
    drift.

    chat=True: one Gemma user turn plus the generation prompt, for the trained (or instruction-tuned) student.
    chat=False: the same instruction and question as plain text ending in a newline, for a base model.
    """
    text = render("student", question=question)
    return gemma_chat([{"role": "user", "content": text}]) if chat else text


def student_target(reasoning: str, answer: str) -> str:
    """The completion the student is trained on: `<reasoning>R</reasoning>\\n<answer>A</answer>`, trimmed, no
    trailing newline (the trainer appends <end_of_turn> as a token id)."""
    return render("student_target", reasoning=reasoning, answer=answer)


def teacher_prompt(question: str, *, style: str = "chat", shots: str = "gsm8k", k: int | None = 8) -> str:
    """A prompt asking a teacher for a trace in the student's format.

    style "chat": zero-shot request in a Gemma user turn, for instruction-tuned teachers (`shots`, `k`
    unused).
    For a non-Gemma teacher, render "teacher_cot" and pass it through that model's own chat template.
    style "few_shot": `k` exemplars (all when None) of set `shots` then the question, plain text, for base
    models; stop generation on FEW_SHOT_STOP (and GEMMA_STOP_TOKEN_IDS).
    """
    if style == "chat":
        return gemma_chat([{"role": "user", "content": render("teacher_cot", question=question)}])
    if style == "few_shot":
        return render("few_shot", shots=load_shots(shots, k), question=question)
    raise CotgenError(f"unknown prompt style {style!r}; known: {', '.join(PROMPT_STYLES)}")


def truncate_at_stop(text: str, stop: tuple[str, ...] = FEW_SHOT_STOP) -> str:
    """Cut `text` before the earliest stop string, for samplers that stop only on token ids."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]
