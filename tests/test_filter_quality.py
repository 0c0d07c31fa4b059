"""Quality filters: each catches its own kind of bad trace and lets a clean one through."""

from __future__ import annotations

import polars as pl

from cotgen.filter.quality import FILTERS, QualityLimits, add_quality

GOOD = (
    "<reasoning>Natalia sold 48 clips in April. In May she sold half as many: 48 / 2 = 24 clips. "
    "Altogether she sold 48 + 24 = 72 clips.</reasoning>\n<answer>72</answer>"
)


def quality(completions, finish=None, tokens=None, **limits) -> pl.DataFrame:
    n = len(completions)
    df = pl.DataFrame(
        {
            "completion": completions,
            "finish_reason": finish or ["stop"] * n,
            "completion_tokens": tokens or [50] * n,
        },
        schema_overrides={"completion": pl.String},
    )
    return add_quality(df, QualityLimits(**limits))


def failing(row: dict) -> set[str]:
    return {f for f in FILTERS if row[f]}


def test_clean_trace_passes_and_gives_groups():
    row = quality([GOOD]).row(0, named=True)
    assert failing(row) == set()
    assert row["reasoning"].startswith("Natalia") and row["tag_answer"] == "72"


def test_format():
    bad = [
        "Natalia sold 72 clips.",  # no tags
        "<answer>72</answer><reasoning>because</reasoning>",  # answer before reasoning
        "<reasoning>a</reasoning><reasoning>b</reasoning><answer>1</answer>",  # tag twice
        "<reasoning>  </reasoning>\n<answer>72</answer>",  # blank reasoning
        "<reasoning>ok</reasoning>\n<answer> </answer>",  # blank answer
        "<reasoning>ok</reasoning>\n<answer>72</answer> and more",  # text after the answer
        "<reasoning>ok <answer>1</answer></reasoning>",  # nested
    ]
    out = quality(bad)
    assert out["format"].all()
    assert out["reasoning"].is_null().all()


def test_truncation_and_length():
    out = quality(
        [GOOD] * 4,
        finish=["length", "stop", "stop", "stop"],
        tokens=[50, 3, 5000, 50],
        min_tokens=8,
        max_tokens=2048,
    )
    assert [failing(r) for r in out.iter_rows(named=True)] == [{"truncated"}, {"length"}, {"length"}, set()]


def test_repetition_loops_and_ngrams():
    loop = (
        "<reasoning>" + "We add 3 to the total and check it again. " * 30 + "</reasoning>\n<answer>5</answer>"
    )
    lines = "<reasoning>Start.\n" + "Let me recompute this sum.\n" * 5 + "</reasoning>\n<answer>5</answer>"
    varied = (
        "<reasoning>"
        + " ".join(f"Step {i}: add {i} apples to basket {i % 7} giving {i * 3}." for i in range(40))
        + "</reasoning>\n<answer>5</answer>"
    )
    out = quality([loop, lines, varied])
    assert out["repetition"].to_list() == [True, True, False]
    assert out["repeat_frac"][0] > 0.8 and out["repeat_frac"][2] < 0.5


def test_garbage():
    junk = "<reasoning>" + "\x00\ufffd\x07" * 20 + " the total is 5</reasoning>\n<answer>5</answer>"
    emoji = "<reasoning>" + "🙂" * 30 + " so 5</reasoning>\n<answer>5</answer>"
    math = "<reasoning>∑ x² ≤ √2 · π ± ∞, €5 → ¥7; “quoted” — fine</reasoning>\n<answer>5</answer>"
    out = quality([junk, emoji, math])
    assert out["garbage"].to_list() == [True, True, False]


def test_repair_keeps_traces_that_only_lack_the_closing_reasoning_tag():
    import polars as pl

    from cotgen.filter.quality import add_format

    texts = ["<reasoning>3 + 4 = 7\n<answer>7</answer>",  # repairable
             "<reasoning>ok</reasoning>\n<answer>7</answer>",  # already strict
             "<reasoning>\n<answer>7</answer>",  # blank reasoning: never
             "<reasoning>a <answer>7</answer> more",  # text after the answer: never
             "3 + 4 = 7\n<answer>7</answer>"]  # no reasoning tag: never
    strict = add_format(pl.DataFrame({"completion": texts}))
    assert strict["reasoning"].to_list() == [None, "ok", None, None, None]
    fixed = add_format(pl.DataFrame({"completion": texts}), repair=True)
    assert fixed["reasoning"].to_list() == ["3 + 4 = 7", "ok", None, None, None]
    assert fixed["tag_answer"].to_list() == ["7", "7", None, None, None]
    assert fixed["format_repaired"].to_list() == [True, False, False, False, False]
