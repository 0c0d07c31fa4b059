"""Eval metrics against hand-computed values."""

from math import comb

import numpy as np
import polars as pl
import pytest

from cotgen.eval import metrics

MATH_META = '{"level":%d,"subject":"%s","unique_id":"x"}'


def samples(rows: list[tuple]) -> pl.DataFrame:
    """rows: (problem_id, pass, sample_idx, vote, correct[, metadata, tokens, finish_reason])."""
    out = []
    for r in rows:
        pid, kind, idx, vote, correct, *rest = r
        meta, tokens, finish = (rest + ["{}", 10, "stop"][len(rest):])[:3]
        out.append({"problem_id": pid, "pass": kind, "sample_idx": idx, "vote": vote, "correct": correct,
                    "format_ok": vote is not None, "completion_tokens": tokens, "finish_reason": finish,
                    "metadata": meta})
    return pl.DataFrame(out, schema={"problem_id": pl.String, "pass": pl.String, "sample_idx": pl.Int64,
                                     "vote": pl.String, "correct": pl.Boolean, "format_ok": pl.Boolean,
                                     "completion_tokens": pl.Int64, "finish_reason": pl.String,
                                     "metadata": pl.String})


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (5, 0, 3, 0.0), (5, 5, 1, 1.0), (10, 3, 1, 0.3),
    (4, 1, 4, 1.0),  # n - c < k: every draw of 4 holds the correct one
    (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (8, 2, 4, 1 - 15 / 70),
])
def test_pass_at_k_hand_values(n, c, k, expected):
    assert metrics.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomials_and_array_form():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - comb(n - c, k) / comb(n, k)
                assert metrics.pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    n = np.array([8, 8, 8, 5, 200])
    c = np.array([0, 3, 8, 2, 7])
    for k in (1, 2, 4, 5):
        got = metrics.pass_at_k_array(n, c, k)
        assert got == pytest.approx([metrics.pass_at_k(a, b, k) for a, b in zip(n, c)], abs=1e-12)
    assert np.isnan(metrics.pass_at_k_array(np.array([2]), np.array([1]), 4)[0])  # n < k: undefined
    with pytest.raises(ValueError):
        metrics.pass_at_k(3, 4, 1)


def test_ks_for():
    assert metrics.ks_for(1) == [1]
    assert metrics.ks_for(8) == [1, 2, 4, 8]
    assert metrics.ks_for(6) == [1, 2, 4, 6]


def test_majority_ties_unparsed_and_k():
    df = samples([
        # a: votes 3, 4, 4, unparsed; gold 3
        ("a", "sampled", 0, "3", True), ("a", "sampled", 1, "4", False), ("a", "sampled", 2, "4", False),
        ("a", "sampled", 3, None, False),
        # b: 5, 6, 6, 5 (a 2-2 tie at k=4 goes to 5, voted first); gold 5
        ("b", "sampled", 0, "5", True), ("b", "sampled", 1, "6", False), ("b", "sampled", 2, "6", False),
        ("b", "sampled", 3, "5", True),
        # c: nothing parsed: no vote, scored wrong
        *[("c", "sampled", i, None, False) for i in range(4)],
        # d: unparsed first, then the right answer: unparsed does not vote
        ("d", "sampled", 0, None, False), ("d", "sampled", 1, "7", True), ("d", "sampled", 2, None, False),
        ("d", "sampled", 3, "8", False),
    ])
    got = {k: dict(metrics.majority(df, k).iter_rows()) for k in (1, 2, 4)}
    assert got[1] == {"a": True, "b": True}  # c and d cast no vote among their first sample
    assert got[2] == {"a": True, "b": True, "d": True}  # a: 3-4 tie -> 3 (earliest); b: 5-6 tie -> 5
    assert got[4] == {"a": False, "b": True, "d": True}  # a: 4 wins 2-1; d: 7-8 tie -> 7
    per = metrics.per_problem(df)
    assert per["maj@4"].to_list() == [False, True, False, True]  # c filled as wrong


def test_majority_uses_first_k_by_sample_idx_not_row_order():
    df = samples([("a", "sampled", 2, "9", False), ("a", "sampled", 0, "1", True), ("a", "sampled", 1, "9", False)])
    assert dict(metrics.majority(df, 1).iter_rows()) == {"a": True}
    assert dict(metrics.majority(df, 3).iter_rows()) == {"a": False}


def test_summarize_hand_values():
    df = samples([
        ("a", "greedy", 0, "3", True, "{}", 10, "stop"),
        ("b", "greedy", 0, None, False, "{}", 30, "length"),
        ("a", "sampled", 0, "3", True, "{}", 10, "stop"), ("a", "sampled", 1, "4", False, "{}", 20, "stop"),
        ("a", "sampled", 2, "4", False, "{}", 30, "stop"), ("a", "sampled", 3, None, False, "{}", 40, "length"),
        ("b", "sampled", 0, "5", True, "{}", 50, "stop"), ("b", "sampled", 1, "6", False, "{}", 60, "stop"),
        ("b", "sampled", 2, "6", False, "{}", 70, "error"), ("b", "sampled", 3, "5", True, "{}", 80, "stop"),
    ])
    m = metrics.summarize(df)
    assert m["problems"] == 2 and m["greedy/samples"] == 2 and m["sampled/samples"] == 8
    assert m["greedy/pass@1"] == 0.5
    assert m["sampled/pass@1"] == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert m["sampled/pass@2"] == pytest.approx((1 - comb(3, 2) / comb(4, 2) + 1 - comb(2, 2) / comb(4, 2)) / 2)
    assert m["sampled/pass@4"] == 1.0
    assert (m["sampled/maj@1"], m["sampled/maj@2"], m["sampled/maj@4"]) == (1.0, 1.0, 0.5)
    assert m["greedy/format_rate"] == 0.5 and m["greedy/truncation_rate"] == 0.5
    assert m["greedy/unparsed_rate"] == 0.5
    assert m["sampled/format_rate"] == 7 / 8 and m["sampled/truncation_rate"] == 1 / 8
    assert m["sampled/error_rate"] == 1 / 8
    assert m["greedy/length_mean"] == 20 and m["greedy/length_p50"] == 20
    assert m["sampled/length_mean"] == 45
    assert m["sampled/length_p50"] == 45 and m["sampled/length_p90"] == pytest.approx(73.0)  # numpy linear
    assert m["sampled/length_p99"] == pytest.approx(79.3)


def test_greedy_only_run_has_no_sampled_metrics():
    m = metrics.summarize(samples([("a", "greedy", 0, "1", True), ("b", "greedy", 0, "2", False)]))
    assert m["greedy/pass@1"] == 0.5
    assert not [k for k in m if k.startswith("sampled/")]


def test_breakdown_by_level_and_subject():
    rows = []
    for pid, level, subject, greedy, sampled in [("p1", 1, "Algebra", True, [True, True]),
                                                 ("p2", 1, "Geometry", False, [False, True]),
                                                 ("p3", 5, "Algebra", False, [False, False])]:
        meta = MATH_META % (level, subject)
        rows.append((pid, "greedy", 0, "x", greedy, meta))
        rows += [(pid, "sampled", i, "x" if ok else "y", ok, meta) for i, ok in enumerate(sampled)]
    per = metrics.per_problem(samples(rows))
    by_level = metrics.breakdown(per, "level")
    assert by_level.to_dicts() == [
        {"level": "1", "problems": 2, "greedy/pass@1": 0.5, "sampled/pass@2": 1.0, "sampled/maj@2": 0.5},
        {"level": "5", "problems": 1, "greedy/pass@1": 0.0, "sampled/pass@2": 0.0, "sampled/maj@2": 0.0},
    ]
    by_subject = metrics.breakdown(per, "subject")
    assert by_subject["subject"].to_list() == ["Algebra", "Geometry"]
    assert by_subject["problems"].to_list() == [2, 1]
    gsm = metrics.per_problem(samples([("g", "greedy", 0, "1", True)]))
    assert metrics.breakdown(gsm, "level").height == 0  # "{}" metadata: no breakdown
