"""`cotgen eval --compare` on synthetic runs whose answer is known."""

import json

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from cotgen.cli import main
from cotgen.errors import CotgenError
from cotgen.eval import compare
from cotgen.eval.adapters import add_work
from cotgen.eval.records import SAMPLE_SCHEMA, WORK


def write_run(folder, greedy: list[bool], sampled: list[list[bool]] | None = None, *, ids=None, protocol=None):
    """An eval folder holding samples.parquet (and metrics.json's protocol) for the given verdicts."""
    ids = ids or [f"p{i:04d}" for i in range(len(greedy))]
    rows = []
    for i, pid in enumerate(ids):
        rows.append(_row(pid, "greedy", 0, greedy[i]))
        for j, ok in enumerate(sampled[i] if sampled else []):
            rows.append(_row(pid, "sampled", j, ok))
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema=SAMPLE_SCHEMA).write_parquet(folder / "samples.parquet")
    (folder / "metrics.json").write_text(json.dumps({"protocol": protocol or {"model": "m", "source": "gsm8k"}}))
    return folder


def _row(pid, kind, idx, ok):
    answer = "1" if ok else "2"
    return {"problem_id": pid, "pass": kind, "sample_idx": idx, "source": "gsm8k", "split": "test",
            "metadata": "{}", "gold": "1", "completion": f"<reasoning>r</reasoning>\n<answer>{answer}</answer>",
            "finish_reason": "stop", "prompt_tokens": 5, "completion_tokens": 7, "temperature": 0.0, "seed": 0,
            "error": None, "extracted": answer, "method": "answer_tag", "vote": answer, "correct": ok,
            "status": "correct" if ok else "wrong", "path": "numeric", "format_ok": True}


def _rows(c):
    return {r["metric"]: r for r in c.rows}


def test_identical_runs_give_zero_difference(tmp_path):
    rng = np.random.default_rng(1)
    greedy = list(rng.random(150) < 0.4)
    sampled = [list(rng.random(4) < 0.4) for _ in range(150)]
    a = write_run(tmp_path / "a", greedy, sampled)
    b = write_run(tmp_path / "b", greedy, sampled)
    c = compare.compare(a, b)
    assert c.shared == 150 and c.only_a == c.only_b == 0
    rows = _rows(c)
    assert set(rows) >= {"greedy/pass@1", "sampled/pass@1", "sampled/pass@4", "sampled/maj@4"}
    for r in rows.values():
        assert r["diff"] == 0 and r["lo"] == 0 and r["hi"] == 0 and not r["excludes_zero"]
    assert rows["greedy/pass@1"]["a"] == pytest.approx(np.mean(greedy))
    assert c.mcnemar == {"a_only": 0, "b_only": 0, "p_value": 1.0}
    assert "| greedy/pass@1 |" in compare.render(c) and "| no |" in compare.render(c)


def test_clearly_better_run_excludes_zero(tmp_path):
    n = 200
    a_greedy = [i % 10 < 3 for i in range(n)]  # 30% correct
    b_greedy = [i % 10 < 7 for i in range(n)]  # 70%, a superset of A's
    a = write_run(tmp_path / "a", a_greedy, [[x, False] for x in a_greedy])
    b = write_run(tmp_path / "b", b_greedy, [[x, x] for x in b_greedy])
    c = compare.compare(a, b)
    r = _rows(c)["greedy/pass@1"]
    assert r["diff"] == pytest.approx(0.4) and r["excludes_zero"] and 0.3 < r["lo"] < 0.4 < r["hi"] < 0.5
    assert c.mcnemar["a_only"] == 0 and c.mcnemar["b_only"] == 80
    assert c.mcnemar["p_value"] == pytest.approx(2 * 0.5 ** 80)
    assert _rows(c)["sampled/pass@2"]["excludes_zero"]
    swapped = _rows(compare.compare(b, a))["greedy/pass@1"]
    assert swapped["diff"] == pytest.approx(-0.4) and swapped["hi"] < 0 and swapped["excludes_zero"]


def test_small_noisy_difference_does_not_exclude_zero(tmp_path):
    a = [i % 2 == 0 for i in range(40)]
    b = list(a)
    b[1] = True  # one problem better
    c = compare.compare(write_run(tmp_path / "a", a), write_run(tmp_path / "b", b))
    r = _rows(c)["greedy/pass@1"]
    assert r["diff"] == pytest.approx(1 / 40) and r["lo"] <= 0 <= r["hi"] and not r["excludes_zero"]
    assert c.mcnemar["p_value"] == 1.0  # binomtest(1, 1): two-sided p = 1


def test_bootstrap_is_seeded_and_centred():
    diffs = np.random.default_rng(0).normal(0.1, 1.0, size=(300, 2))
    lo1, hi1 = compare.paired_bootstrap(diffs, resamples=2000, seed=0)
    lo2, hi2 = compare.paired_bootstrap(diffs, resamples=2000, seed=0)
    assert (lo1 == lo2).all() and (hi1 == hi2).all()
    mean, se = diffs.mean(axis=0), diffs.std(axis=0) / np.sqrt(300)
    assert lo1 == pytest.approx(mean - 1.96 * se, abs=0.03) and hi1 == pytest.approx(mean + 1.96 * se, abs=0.03)
    lo, hi = compare.paired_bootstrap(np.full(50, 0.25))
    assert lo[0] == hi[0] == 0.25


def test_mcnemar_exact_value():
    a = np.array([True] * 2 + [False] * 10 + [True] * 5)
    b = np.array([False] * 2 + [True] * 10 + [True] * 5)
    m = compare.mcnemar(a, b)
    from scipy.stats import binom

    assert (m["a_only"], m["b_only"]) == (2, 10)
    assert m["p_value"] == pytest.approx(2 * binom.cdf(2, 12, 0.5))


def test_joins_on_problem_id_and_reports_protocol_differences(tmp_path):
    a = write_run(tmp_path / "a", [True, False, True], ids=["x", "y", "z"], protocol={"model": "m1"})
    b = write_run(tmp_path / "b", [True, False, True, True], ids=["w", "z", "y", "x"], protocol={"model": "m2"})
    c = compare.compare(a, b)
    assert (c.shared, c.only_a, c.only_b) == (3, 0, 1)
    r = _rows(c)["greedy/pass@1"]
    assert r["a"] == pytest.approx(2 / 3) and r["b"] == pytest.approx(2 / 3) and r["diff"] == 0  # y and z swap
    assert c.mcnemar == {"a_only": 1, "b_only": 1, "p_value": 1.0}
    assert c.protocol_diff == {"model": ("m1", "m2")}
    assert "Protocols differ" in compare.render(c)


def test_no_shared_problem_or_missing_folder_is_an_error(tmp_path):
    a = write_run(tmp_path / "a", [True], ids=["x"])
    b = write_run(tmp_path / "b", [True], ids=["y"])
    with pytest.raises(CotgenError, match="share no problem"):
        compare.compare(a, b)
    with pytest.raises(CotgenError, match="no such eval folder"):
        compare.compare(a, tmp_path / "nope")


def test_compare_cli(tmp_path):
    a = write_run(tmp_path / "a", [i % 3 == 0 for i in range(30)])
    b = write_run(tmp_path / "b", [i % 3 != 2 for i in range(30)])
    out = tmp_path / "cmp"
    result = CliRunner().invoke(main, ["eval", "--compare", str(a), str(b), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "B - A" in result.output and "| greedy/pass@1 | 0.3333 | 0.6667 | +0.3333 |" in result.output
    assert "McNemar" in result.output
    assert (out / "compare.md").read_text() == result.output
    assert json.loads((out / "compare.json").read_text())["rows"][0]["metric"] == "greedy/pass@1"
    bad = CliRunner().invoke(main, ["eval", "--compare", str(a), str(b), "--model", "tiny"])
    assert bad.exit_code == 2 and "--compare takes only --out" in bad.output
    missing = CliRunner().invoke(main, ["eval", "--compare", str(a), str(tmp_path / "none")])
    assert missing.exit_code == 2 and "no such eval folder" in missing.output


def test_faithful_work_and_wrong_steps_are_compared(tmp_path):
    """Both runs right on every problem; A reaches the answer through a false step (`2 + 2 = 5`), B through a
    right one. pass@1 does not move; the faithful-work rate goes 0 -> 1 with an interval above zero. A's
    samples.parquet is written without the step columns (a run from before steps were checked): they are read
    from its text."""
    def run(folder, reasoning, with_work):
        rows = []
        for i in range(40):
            row = _row(f"p{i:04d}", "greedy", 0, True)
            row["completion"] = f"<reasoning>{reasoning}</reasoning>\n<answer>1</answer>"
            rows.append(row)
        df = pl.DataFrame(rows, schema=SAMPLE_SCHEMA).drop(*WORK)
        if with_work:
            df = add_work(df).select(SAMPLE_SCHEMA.names())
        folder.mkdir()
        df.write_parquet(folder / "samples.parquet")
        (folder / "metrics.json").write_text(json.dumps({"protocol": {"model": "m"}}))
        return folder

    c = compare.compare(run(tmp_path / "a", "2 + 2 = 5, minus 4 is 1", False), run(tmp_path / "b", "3 - 2 = 1", True))
    rows = _rows(c)
    assert rows["greedy/pass@1"]["diff"] == 0
    faithful, wrong = rows["greedy/faithful_rate"], rows["greedy/wrong_step_rate"]
    assert (faithful["a"], faithful["b"], faithful["excludes_zero"]) == (0.0, 1.0, True)
    assert (wrong["a"], wrong["b"]) == (1.0, 0.0)
