"""Scoring through the filter stage's extractor and verifier, and the report folder."""

import json
import math

import polars as pl
import pytest

from cotgen.engines.backend import Sample
from cotgen.eval import adapters, metrics, records, report
from cotgen.schemas import PROBLEM_SCHEMA

PROBLEMS = pl.DataFrame(
    {"id": ["g1", "m1"], "source": ["gsm8k", "math500"], "split": ["test", "test"],
     "question": ["How many?", "Simplify."], "answer": ["1000", "\\frac{1}{2}"], "solution": ["", ""],
     "metadata": ["{}", '{"level":2,"subject":"Algebra","unique_id":"u"}']},
    schema=PROBLEM_SCHEMA,
)


def _sample(pid, idx, text, finish="stop", error=None):
    return Sample(pid, idx, text, finish, 11, len(text.split()), 7 + idx, None, error)


def test_scored_uses_the_filter_verdicts():
    got = records.scored([
        _sample("g1", 0, "<reasoning>10 * 100 = 1000</reasoning>\n<answer>1,000</answer>\n\n"),
        _sample("g1", 1, "so 999 + 1 = 1000.\n#### 1000"),
        _sample("g1", 2, "I think <answer>999</answer> and then more"),
        _sample("g1", 3, "no digits at all", "length"),
        _sample("g1", 4, "", "error", error="HTTP 500"),
        _sample("m1", 0, "<reasoning>half</reasoning>\n<answer>0.5</answer>"),
        _sample("m1", 1, "<reasoning>half</reasoning>\n<answer>\\frac{\\sqrt{2}}{2\\sqrt{2}}</answer>"),
    ], "sampled", 0.6, PROBLEMS)
    assert got.schema == records.SAMPLE_SCHEMA
    rows = {(r["problem_id"], r["sample_idx"]): r for r in got.iter_rows(named=True)}
    r = rows["g1", 0]
    assert (r["extracted"], r["method"], r["vote"], r["correct"], r["format_ok"]) == ("1,000", "answer_tag", "1000",
                                                                                       True, True)
    r = rows["g1", 1]
    assert (r["method"], r["correct"], r["format_ok"], r["vote"]) == ("hashes", True, False, "1000")
    assert not rows["g1", 2]["correct"] and not rows["g1", 2]["format_ok"] and rows["g1", 2]["vote"] == "999"
    r = rows["g1", 3]
    assert r["extracted"] is None and r["vote"] is None and not r["correct"] and r["status"] == "no_answer"
    r = rows["g1", 4]
    assert not r["correct"] and not r["format_ok"] and r["status"] == "sample_error" and r["error"] == "HTTP 500"
    r = rows["m1", 0]
    assert r["correct"] and r["gold"] == "\\frac{1}{2}" and r["vote"] == "0.5"
    assert r["metadata"] == PROBLEMS["metadata"][1] and r["temperature"] == 0.6 and r["pass"] == "sampled"
    r = rows["m1", 1]  # not a plain number: decided by the filter's symbolic path (math-verify, sandboxed)
    assert r["correct"] and r["path"] == "symbolic" and r["status"] == "correct"


def test_vote_key_groups_equal_answers():
    df = pl.DataFrame({"extracted": ["1,000", "1000.", "$1000", "0.5", "\\frac{1}{2}", "1/2", "25%", "-007",
                                     "\\sqrt{3} / 2", "  ", None]}, schema={"extracted": pl.String})
    votes = adapters.add_vote(df)["vote"].to_list()
    assert votes[:3] == ["1000"] * 3 and votes[3:6] == ["0.5"] * 3
    assert votes[6] == "25.0%" and votes[7] == "-7" and votes[8] == "\\sqrt{3}/2"
    assert votes[9] is None and votes[10] is None


def _report(tmp_path, samples):
    per = metrics.per_problem(samples)
    summary = metrics.summarize(samples, per)
    breakdowns = {"level": metrics.breakdown(per, "level")}
    protocol = {"model": "m", "source": "math500", "split": "test", "backend": "tunix", "prompt_style": "few_shot",
                "max_tokens": 64, "prompt_example": "Question: What?\n"}
    return report.write(tmp_path / "eval", samples, per, summary, breakdowns, protocol, {"wall_s": 1.5})


def test_report_writes_every_file_consistently(tmp_path):
    samples = records.scored([_sample("g1", 0, "<answer>1000</answer>"), _sample("m1", 0, "<answer>2</answer>")],
                             "greedy", 0.0, PROBLEMS)
    samples = pl.concat([samples, records.scored(
        [_sample(pid, i, f"<answer>{a}</answer>") for pid, a in (("g1", "1000"), ("m1", "1/2")) for i in range(2)],
        "sampled", 0.6, PROBLEMS)])
    out = _report(tmp_path, samples)
    assert {p.name for p in out.iterdir()} == set(report.FILES) - {"config.toml"}  # config.toml: run.py writes it
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["metrics"]["greedy/pass@1"] == 0.5 and doc["metrics"]["sampled/pass@2"] == 1.0
    assert doc["breakdown"]["level"] == [{"level": "2", "problems": 1, "greedy/pass@1": 0.0,
                                          "sampled/pass@2": 1.0, "sampled/maj@2": 1.0}]
    assert doc["protocol"]["model"] == "m" and doc["timings"] == {"wall_s": 1.5}
    assert pl.read_parquet(out / "samples.parquet").equals(samples)
    assert pl.read_parquet(out / "problems.parquet").height == 2
    for png in ("pass_at_k.png", "lengths.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "summary.md").read_text()
    assert "# Eval: m on math500/test" in md and "| greedy/pass@1 | 0.5 |" in md and "## By level" in md
    assert "Question: What?" in md and "pass_at_k.png" in md
    assert not list(out.glob(".*"))  # no temporary files left


def test_report_nan_is_null_and_greedy_only_plots(tmp_path):
    samples = records.scored([_sample("g1", 0, "nothing")], "greedy", 0.0, PROBLEMS)
    out = _report(tmp_path, samples)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["metrics"]["greedy/pass@1"] == 0.0 and "sampled/pass@1" not in doc["metrics"]
    assert report._finite({"x": [math.nan, 1.0]}) == {"x": [None, 1.0]}
    assert (out / "pass_at_k.png").stat().st_size > 0


@pytest.mark.parametrize("value,text", [(0.0, "0"), (0.25, "0.25"), (1 / 3, "0.3333"), (math.nan, "n/a"), (7, "7")])
def test_number_format(value, text):
    assert report._fmt(value) == text
