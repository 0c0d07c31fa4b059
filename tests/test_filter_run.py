"""`cotgen filter` end to end on hand-built trace folders: every drop reason lands where it should, the
outputs load (polars, datasets), and bad input stops with one clear error and no output."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from cotgen.cli import main
from cotgen.errors import CotgenError, InputError
from cotgen.filter.config import FilterConfig
from cotgen.filter.run import run
from cotgen.prompts import student_prompt, student_target
from cotgen.schemas import PASS_RATE_SCHEMA, PROBLEM_SCHEMA, SFT_SCHEMA, TRACE_SCHEMA

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
JANET = (
    json.loads((DATA / "gsm8k" / "test.jsonl").read_text().splitlines()[0])["question"]
    if DATA.is_dir()
    else ""
)
LONG = (
    "First we count the clips sold in April, which is 48. In May she sold half as many clips, so we divide "
    "48 by 2 and get 24 clips. Adding both months gives 48 + 24 = 72 clips in total for April and May. "
    "To check, 72 - 48 = 24, which is indeed half of 48, so the May figure agrees with the question, and "
    "the two months together make the 72 clips we found above."
)


def fmt(reasoning: str, answer: str) -> str:
    return f"<reasoning>{reasoning}</reasoning>\n<answer>{answer}</answer>"


# (problem id, gold, question), then (problem id, completion, finish_reason, tokens, expected reason | None)
PROBLEMS = [
    ("p1", "72", "Natalia sold clips to 48 friends in April and half as many in May. How many in all?"),
    ("p2", "\\frac{1}{2}", "What is one divided by two?"),
    ("p3", "\\sqrt{2}", "What is the side of a square of area two?"),
    ("p4", "", "A problem whose gold answer was lost."),
    ("p5", "18", JANET),
]
TRACES = [
    ("p1", fmt("48 / 2 = 24 and 48 + 24 = 72.", "72"), "stop", 20, None),
    ("p1", fmt("48 / 2 = 24   and 48 + 24 = 72.", "72"), "stop", 21, "duplicate"),
    ("p1", fmt(LONG, "72"), "stop", 60, None),
    ("p1", fmt(LONG.replace("in total", "overall"), "72"), "stop", 61, "near_duplicate"),
    (
        "p1",
        fmt("April 48, May 24, so 72 in all, counting both months of sales together.", "72"),
        "stop",
        70,
        "over_limit",
    ),
    ("p1", fmt("48 + 48 = 96.", "96"), "stop", 15, "wrong"),
    ("p1", fmt(LONG, "72"), "length", 80, "truncated"),
    ("p1", "I am not sure about this one at all.", "stop", 12, "unparsed"),
    ("p1", fmt(LONG, "72"), "stop", 3, "length"),
    ("p1", fmt("We add it again. " * 40, "72"), "stop", 200, "repetition"),
    ("p1", fmt("".join(map(chr, range(0xE000, 0xE040))) + " so 72", "72"), "stop", 40, "garbage"),
    ("p2", fmt("One half is 0.5 as a decimal number.", "0.5"), "stop", 20, None),
    ("p2", fmt("Two quarters make one half of the whole thing.", "\\dfrac{2}{4}"), "stop", 20, None),
    ("p2", fmt("The diagonal of a unit square halved gives this.", "\\sqrt{2}/2"), "stop", 20, "wrong"),
    ("p3", fmt("Rationalise two over root two to get the side.", "\\frac{2}{\\sqrt{2}}"), "stop", 20, None),
    ("p3", "The side is \\boxed{\\sqrt 2} since its square is two.", "stop", 20, "format"),
    ("p4", fmt("Whatever the question was, five.", "5"), "stop", 20, "bad_gold"),
    (
        "p5",
        fmt("16 - 3 - 4 = 9 eggs, sold at $2 each: 9 * 2 = 18 dollars.", "$18"),
        "stop",
        30,
        "contaminated",
    ),
]


def write_problems(path: Path) -> Path:
    rows = [
        dict(id=i, source="toy", split="train", question=q, answer=a, solution="", metadata="{}")
        for i, a, q in PROBLEMS
    ]
    pl.DataFrame(rows, schema=PROBLEM_SCHEMA).write_parquet(path)
    return path


def trace_rows(traces=TRACES) -> list[dict]:
    counts: dict[str, int] = {}
    rows = []
    for pid, completion, finish, tokens, _ in traces:
        idx = counts[pid] = counts.get(pid, -1) + 1
        rows.append(
            dict(
                problem_id=pid,
                sample_idx=idx,
                source="toy",
                split="train",
                answer=None,
                prompt=f"exemplars, then {pid}",
                completion=completion,
                finish_reason=finish,
                prompt_tokens=5,
                completion_tokens=tokens,
                teacher="teacher-x",
                backend="test",
                prompt_style="chat",
                temperature=0.8,
                top_p=1.0,
                max_tokens=256,
                seed=idx,
                logprobs=None,
                error=None,
            )
        )
    return rows


def write_traces(folder: Path, rows: list[dict], *, shards: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    df = pl.DataFrame(rows, schema=TRACE_SCHEMA)
    size = -(-df.height // shards)
    for k in range(shards):
        df.slice(k * size, size).write_parquet(folder / f"traces-all-{k:05d}.parquet")
    return folder


def config(tmp_path: Path, **kw) -> FilterConfig:
    values = dict(
        traces=tmp_path / "traces",
        out=tmp_path / "data",
        problems=tmp_path / "problems.parquet",
        max_per_problem=2,
        val_fraction=0.0,
        workers=1,
        batch_rows=7,
    )
    return FilterConfig(**{**values, **kw})


@pytest.fixture(scope="module")
def filtered(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("filter")
    rows = trace_rows()
    rows.append({**rows[0], "sample_idx": 99, "completion": "", "finish_reason": "error", "error": "timeout"})
    write_traces(tmp / "traces", rows)
    write_problems(tmp / "problems.parquet")
    stats = run(config(tmp, decontaminate="gsm8k:test", data_dir=DATA))
    return tmp / "data", stats


def test_every_trace_goes_for_the_expected_reason(filtered):
    out, _ = filtered
    dropped = pl.read_parquet(out / "dropped.parquet")
    got = {(r["problem_id"], r["sample_idx"]): r["reason"] for r in dropped.iter_rows(named=True)}
    expected, seen = {}, {}
    for pid, *_, reason in TRACES:
        idx = seen[pid] = seen.get(pid, -1) + 1
        if reason is not None:
            expected[(pid, idx)] = reason
    assert got == expected
    assert set(dropped["file"]) <= {"traces-all-00000.parquet", "traces-all-00001.parquet"}


def test_funnel_and_stats(filtered):
    out, stats = filtered
    assert stats == json.loads((out / "stats.json").read_text())
    assert stats["funnel"] == {
        "traces": 18,
        "gold_ok": 17,
        "parsed": 16,
        "correct": 14,
        "passed_filters": 9,
        "work_ok": 9,
        "unique": 7,
        "uncontaminated": 6,
        "kept": 5,
    }
    assert stats["skipped"] == {"generation_error": 1, "repeated_key": 0}
    assert stats["filters"]["all_traces"]["truncated"] == 1
    assert stats["verification"]["path"]["symbolic"] >= 2  # p3's radicals, p4's blank gold
    assert stats["problems"]["contaminated"] == {"gsm8k:test": 1}
    summary = (out / "summary.md").read_text()
    assert "| kept | 5 |" in summary and "near_duplicate" in summary
    for png in ("funnel.png", "pass_rates.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no scratch left behind


def test_sft_records(filtered):
    out, _ = filtered
    train = pl.read_parquet(out / "train.parquet")
    assert train.schema == SFT_SCHEMA
    assert pl.read_parquet(out / "validation.parquet").height == 0  # val_fraction 0
    kept = sorted(train.select("problem_id", "sample_idx").iter_rows())
    assert kept == [("p1", 0), ("p1", 2), ("p2", 0), ("p2", 1), ("p3", 0)]
    for row in train.iter_rows(named=True):
        assert row["prompt"] == student_prompt(row["question"])
        assert row["completion"] == student_target(row["reasoning"], row["answer"])
        assert row["teacher"] == "teacher-x"
        assert row["teacher_prompt"] == f"exemplars, then {row['problem_id']}"  # the trace's own prompt
    p1 = train.filter(pl.col("problem_id") == "p1").row(0, named=True)
    assert p1["gold"] == "72" and p1["answer"] == "72" and p1["reasoning"].startswith("48 / 2")


def test_pass_rates(filtered):
    out, _ = filtered
    rates = pl.read_parquet(out / "pass_rates.parquet")
    assert rates.schema == PASS_RATE_SCHEMA
    r = {row["problem_id"]: row for row in rates.iter_rows(named=True)}
    assert (r["p1"]["n_samples"], r["p1"]["n_correct"], r["p1"]["n_kept"]) == (11, 9, 2)
    assert r["p2"]["pass_rate"] == pytest.approx(2 / 3)
    assert r["p4"]["pass_rate"] is None  # unparsable gold: no rate, never correct
    assert r["p5"]["contaminated_by"] == "gsm8k:test" and r["p5"]["n_kept"] == 0


def test_outputs_load_with_datasets(filtered):
    datasets = pytest.importorskip("datasets")
    out, _ = filtered
    ds = datasets.load_dataset("parquet", data_files={"train": str(out / "train.parquet")}, split="train")
    assert ds.num_rows == 5 and {"prompt", "completion"} <= set(ds.column_names)


def test_resolved_config_repeats_the_run(filtered, tmp_path):
    out, stats = filtered
    text = (out / "config.toml").read_text()
    assert 'command = "filter"' in text and "max_per_problem = 2" in text
    again = FilterConfig(**{**_toml(out / "config.toml"), "out": tmp_path / "again"})
    assert run(again)["funnel"] == stats["funnel"]


def _toml(path: Path) -> dict:
    import tomllib

    data = tomllib.loads(path.read_text())
    data.pop("cotgen")
    return data


def test_diverse_versus_shortest_and_validation_split(tmp_path):
    texts = [
        LONG,
        LONG.replace("48 + 24", "24 + 48"),
        "Half of 48 is 24; with April's 48 that is 72 clips.",
        "May: 24. April: 48. Sum: 72 clips sold over the two months together.",
    ]
    rows = trace_rows(
        [("p1", fmt(t, "72"), "stop", tokens, None) for t, tokens in zip(texts, (30, 31, 50, 60))]
        + [("p2", fmt("It is a half, written 1/2.", "1/2"), "stop", 10, None)]
    )
    write_traces(tmp_path / "traces", rows, shards=1)
    write_problems(tmp_path / "problems.parquet")
    picked = {}
    for mode in ("shortest", "diverse"):
        out = tmp_path / mode
        stats = run(config(tmp_path, out=out, select=mode, near_dup=0.95, val_fraction=0.5))
        train, val = pl.read_parquet(out / "train.parquet"), pl.read_parquet(out / "validation.parquet")
        assert stats["outputs"]["train_problems"] == stats["outputs"]["validation_problems"] == 1
        assert set(train["problem_id"]).isdisjoint(val["problem_id"])  # split by problem, not by trace
        picked[mode] = (
            pl.concat([train, val]).filter(pl.col("problem_id") == "p1")["sample_idx"].sort().to_list()
        )
    assert picked == {"shortest": [0, 1], "diverse": [0, 2]}  # diverse skips LONG's near copy (Jaccard ~0.9)


# ---- bad input ---------------------------------------------------------------------------------------


def test_bad_input_names_file_row_and_field(tmp_path):
    write_problems(tmp_path / "problems.parquet")
    cases = [
        (
            lambda r: r[1].update(completion=None),
            "traces-all-00000.parquet: field 'completion': row 2: is null",
        ),
        (lambda r: r[2].update(finish_reason="eos"), "field 'finish_reason': row 3: 'eos' is not one of"),
        (lambda r: r[3].update(problem_id="nope"), "field 'problem_id': row 4: problem 'nope' is not among"),
    ]
    for i, (mutate, message) in enumerate(cases):
        rows = trace_rows()[:5]
        mutate(rows)
        write_traces(tmp_path / f"t{i}", rows, shards=1)
        with pytest.raises(InputError) as err:
            run(config(tmp_path, traces=tmp_path / f"t{i}", out=tmp_path / f"o{i}"))
        assert message in str(err.value)
        assert not (tmp_path / f"o{i}").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]


def test_missing_column_and_missing_problems(tmp_path):
    folder = tmp_path / "traces"
    folder.mkdir()
    pl.DataFrame(trace_rows()[:3], schema=TRACE_SCHEMA).drop("completion_tokens").write_parquet(
        folder / "a.parquet"
    )
    with pytest.raises(InputError, match=r"a.parquet: field 'completion_tokens': column is missing"):
        run(config(tmp_path))
    write_traces(folder, [dict(r, source=None, split=None) for r in trace_rows()[:3]], shards=1)
    (folder / "a.parquet").unlink()
    with pytest.raises(CotgenError, match="pass --problems"):
        run(config(tmp_path, problems=None, source=None))
    assert not (tmp_path / "data").exists()


def test_source_from_the_traces_config(tmp_path, data_dir):
    from cotgen.sources import load_problems

    problems = load_problems("gsm8k", "train", data_dir=DATA, limit=3)
    rows = [
        dict(r, problem_id=pid, completion=fmt("Worked it out.", gold))
        for r, pid, gold in zip(trace_rows()[:3], problems["id"], problems["answer"])
    ]
    write_traces(tmp_path / "traces", rows, shards=1)
    (tmp_path / "traces" / "config.toml").write_text(
        f'source = "gsm8k"\nsplit = "train"\nlimit = 3\ndata_dir = "{DATA}"\n'
    )
    stats = run(config(tmp_path, problems=None, min_tokens=1))
    assert stats["funnel"]["kept"] == 3
    assert 'source = "gsm8k"' in (tmp_path / "data" / "config.toml").read_text()


def test_cli_refuses_existing_output_then_overwrites(tmp_path):
    write_traces(tmp_path / "traces", trace_rows()[:3], shards=1)
    write_problems(tmp_path / "problems.parquet")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("mine")
    args = [
        "filter",
        "--traces",
        str(tmp_path / "traces"),
        "--out",
        str(tmp_path / "data"),
        "--problems",
        str(tmp_path / "problems.parquet"),
        "--max-per-problem",
        "1",
        "--workers",
        "1",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "exists and is not empty; pass --overwrite" in result.output
    assert (tmp_path / "data" / "keep.txt").exists()
    result = CliRunner().invoke(main, args + ["--overwrite"])
    assert result.exit_code == 0, result.output
    assert "kept 1" in result.output
    assert not (tmp_path / "data" / "keep.txt").exists()
    assert pl.read_parquet(tmp_path / "data" / "train.parquet").height == 1


def test_cli_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys; import cotgen.cli; "
        "print([m for m in ('polars', 'sympy', 'math_verify') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_repair_format_keeps_unclosed_reasoning_with_a_rebuilt_target(tmp_path):
    unclosed = "<reasoning>48 / 2 = 24 and 48 + 24 = 72.\n<answer>72</answer>"
    write_traces(tmp_path / "traces", trace_rows([("p1", unclosed, "stop", 20, None)]), shards=1)
    write_problems(tmp_path / "problems.parquet")
    strict = run(config(tmp_path, out=tmp_path / "strict"))
    assert strict["funnel"]["kept"] == 0 and strict["drop_reasons"] == {"format": 1}
    repaired = run(config(tmp_path, out=tmp_path / "repaired", repair_format=True))
    assert repaired["funnel"]["kept"] == 1 and repaired["format_repaired"] == {"all_traces": 1, "kept": 1}
    row = pl.read_parquet(tmp_path / "repaired" / "train.parquet").row(0, named=True)
    assert row["completion"] == student_target("48 / 2 = 24 and 48 + 24 = 72.", "72")


def test_require_work_drops_false_arithmetic(tmp_path):
    """--require-work: a right answer reached through a false equation, or with no checked step, goes as
    `bad_work` before selection; the step counts go into the dataset and the stats either way."""
    traces = [
        ("p1", fmt("48 / 2 = 24 and 48 + 24 = 72.", "72"), "stop", 20, None),
        ("p1", fmt("48 / 2 = 20 and 48 + 24 = 72.", "72"), "stop", 20, "bad_work"),  # false step, right answer
        ("p1", fmt("Half of 48 is 24, and both months give seventy-two.", "72"), "stop", 20, "bad_work"),
        ("p1", fmt("48 + 48 = 96.", "96"), "stop", 15, "wrong"),
    ]
    write_traces(tmp_path / "traces", trace_rows(traces), shards=1)
    write_problems(tmp_path / "problems.parquet")
    loose = run(config(tmp_path, max_per_problem=4, out=tmp_path / "loose"))
    strict = run(config(tmp_path, max_per_problem=4, require_work=True))
    assert loose["funnel"]["kept"] == 3 and strict["funnel"]["kept"] == 1
    assert strict["funnel"]["passed_filters"] == 3 and strict["funnel"]["work_ok"] == 1
    assert strict["drop_reasons"]["bad_work"] == 2
    work = loose["work"]["kept"]  # without --require-work only the kept traces are checked
    assert (work["traces"], work["with_wrong_step"], work["without_checked_step"], work["work_ok"]) == (3, 1, 1, 1)
    assert work["steps"] == {"right": 3, "wrong": 1, "unchecked": 0}
    assert set(loose["work"]) == {"kept"}
    assert strict["work"]["checked_before_require_work"]["traces"] == 3 and strict["work"]["kept"]["work_ok"] == 1
    train = pl.read_parquet(tmp_path / "loose" / "train.parquet").sort("sample_idx")
    assert train.select("steps_right", "steps_wrong").rows() == [(2, 0), (1, 1), (0, 0)]
    assert "Arithmetic steps" in (tmp_path / "data" / "summary.md").read_text()
