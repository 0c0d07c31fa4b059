"""Problem sources: row counts and gold answers of the real files in ../shared/data, boxed extraction,
reasoning-gym splits, user files with column mappings, and line-precise errors for bad input."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import polars as pl
import pytest

from cotgen.errors import CotgenError, InputError
from cotgen.schemas import PROBLEM_SCHEMA, check_schema
from cotgen.sources import load_problems, parse_columns, problem_id
from cotgen.verify.extract import last_boxed

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.usefixtures("data_dir")  # conftest fails clearly without ../shared/data


def load(spec: str, split: str = "train", **kw) -> pl.DataFrame:
    return load_problems(spec, split, data_dir=DATA, **kw)


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ---- real data ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, split, rows",
    [
        ("gsm8k", "train", 7473),
        ("gsm8k", "test", 1319),
        ("math", "train", 7498),  # 7500 less the two solutions ending in an empty \boxed{}
        ("math", "test", 5000),
        ("math500", "test", 500),
    ],
)
@needs_data
def test_row_counts_schema_and_unique_ids(spec, split, rows):
    df = load(spec, split)
    assert df.height == rows
    assert df.equals(check_schema(df, PROBLEM_SCHEMA, spec))
    assert df["id"].n_unique() == rows
    assert (df["source"] == spec).all() and (df["split"] == split).all()
    assert df["answer"].str.strip_chars().str.len_chars().min() > 0


@needs_data
def test_gsm8k_gold_and_solution():
    df = load("gsm8k")
    first = df.row(0, named=True)
    assert first["answer"] == "72"
    assert first["solution"].endswith("72 clips altogether in April and May.")
    assert "####" not in first["solution"]
    assert df["answer"][345] == "1080"  # "#### 1,080"
    assert df["answer"].str.contains(r"^-?\d+$").all()  # every GSM8K gold is an integer
    assert load("gsm8k", "test")["answer"][0] == "18"


@needs_data
def test_math_gold_and_metadata(caplog):
    with caplog.at_level(logging.WARNING, logger="cotgen.sources"):
        train = load("math")
    assert "dropped 2 row(s)" in caplog.text and "train.jsonl:5530" in caplog.text
    first = train.row(0, named=True)
    assert first["answer"] == "0"
    assert json.loads(first["metadata"]) == {"level": 5, "subject": "Algebra"}
    assert train["answer"][825] == "17"  # "\boxed {17}"
    assert train["answer"][1655] == "2"  # "\boxed 2$"
    assert json.loads(train["metadata"][2720])["level"] is None  # "Level ?"
    assert load("math", "test")["answer"][14] == "7,9,12,13"  # two boxes: the last one


@needs_data
def test_math500_answer_field_and_metadata():
    df = load("math500", "test")
    first = df.row(0, named=True)
    assert first["answer"] == r"\left( 3, \frac{\pi}{2} \right)"
    assert json.loads(first["metadata"]) == {"level": 2, "subject": "Precalculus",
                                             "unique_id": "test/precalculus/807.json"}
    assert [last_boxed(s) for s in df["solution"]] == df["answer"].to_list()


@needs_data
def test_ids_are_stable_hashes_and_limit_keeps_file_order():
    df = load("gsm8k", limit=5)
    question = df["question"][0]
    assert df["id"][0] == hashlib.sha256(f"gsm8k\n{question}".encode()).hexdigest()[:16] == "18ab2bfbc0e19ab8"
    assert df["id"][0] == problem_id("gsm8k", question)
    assert df.equals(load("gsm8k").head(5))
    assert load("gsm8k", limit=0).height == 0


@needs_data
def test_data_dir_from_environment(monkeypatch):
    monkeypatch.setenv("COTGEN_DATA_DIR", str(DATA))
    assert load_problems("math500", "test", limit=3).height == 3


# ---- boxed extraction --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so $x = \boxed{5}$.", "5"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"first \boxed{1}, then \boxed{2}", "2"),
        (r"\fbox{42}", "42"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{ \text{(A)} }", r"\text{(A)}"),
        (r"answer: $\boxed 9$.", "9"),
        (r"\boxed {17}.", "17"),
        (r"\boxed{}", ""),
        (r"\boxed{1} and then \boxed{2", None),  # truncated last box: not the earlier one
        (r"\boxedx{3}", None),
        ("no box here", None),
        ("", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


# ---- reasoning-gym -----------------------------------------------------------------------------------------


def test_rg_train_and_test_differ_and_are_deterministic():
    train = load_problems("rg:chain_sum", "train", limit=50)
    test = load_problems("rg:chain_sum", "test", limit=50)
    assert 0 < test.height <= 50 and train.height <= 50
    assert not set(train["question"]) & set(test["question"])
    assert train.equals(load_problems("rg:chain_sum", "train", limit=50))
    assert (train["source"] == "rg:chain_sum").all()
    meta = json.loads(train["metadata"][0])
    assert meta["source_dataset"] == "chain_sum"
    assert meta["expression"] in train["question"][0] and re.fullmatch(r"-?\d+", train["answer"][0])


def test_rg_test_drops_questions_seen_in_train():
    # basic_arithmetic, seed 0, 1000 items: two test questions also occur in train (reasoning-gym 0.1.25)
    train = load_problems("rg:basic_arithmetic", "train", limit=1000)
    test = load_problems("rg:basic_arithmetic", "test", limit=1000)
    assert train["id"].n_unique() == train.height
    assert test.height < 1000
    assert not set(train["question"]) & set(test["question"])


def test_rg_unknown_task_lists_known_ones():
    with pytest.raises(CotgenError, match="unknown reasoning-gym task 'chain_sun'.*chain_sum"):
        load_problems("rg:chain_sun")
    with pytest.raises(CotgenError, match="available: train, test"):
        load_problems("rg:chain_sum", "validation")


# ---- user files and column mappings ------------------------------------------------------------------------


def test_jsonl_with_column_mapping(tmp_path):
    path = write_lines(
        tmp_path / "mine.jsonl",
        json.dumps({"problem": "1+1?", "final": 2, "level": "easy"}),
        "",
        json.dumps({"problem": "2+2?", "final": " 4 ", "level": "easy"}),
    )
    df = load_problems(str(path), "dev", columns=parse_columns("question=problem, answer=final"))
    assert df["answer"].to_list() == ["2", "4"]
    assert df["question"].to_list() == ["1+1?", "2+2?"]
    assert (df["source"] == "mine").all() and (df["split"] == "dev").all()
    assert df["solution"].to_list() == ["", ""]
    assert json.loads(df["metadata"][0]) == {"level": "easy"}
    assert df["id"][0] == problem_id("mine", "1+1?")
    assert load_problems(f"file:{path}", "dev", columns={"question": "problem", "answer": "final"}).equals(df)


def test_parquet_and_json_array_files(tmp_path):
    frame = pl.DataFrame({"question": ["q1", "q2"], "answer": ["a1", "a2"], "solution": ["s1", None]})
    frame.write_parquet(tmp_path / "t.parquet")
    df = load_problems(str(tmp_path / "t.parquet"), limit=1)
    assert df.select("question", "answer", "solution").to_dicts() == [{"question": "q1", "answer": "a1",
                                                                        "solution": "s1"}]
    (tmp_path / "arr.json").write_text(json.dumps(frame.to_dicts()), encoding="utf-8")
    assert load_problems(str(tmp_path / "arr.json"))["solution"].to_list() == ["s1", ""]
    with pytest.raises(InputError, match=r"t\.parquet: field 'final': column is missing"):
        load_problems(str(tmp_path / "t.parquet"), columns={"answer": "final"})


def test_parse_columns_rejects_bad_syntax():
    assert parse_columns("") == {}
    for bad in ["question", "question=", "=problem", "q=problem", "answer=a,answer=b"]:
        with pytest.raises(CotgenError):
            parse_columns(bad)


# ---- errors ------------------------------------------------------------------------------------------------


def test_invalid_json_line_is_named(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", '{"question": "a", "answer": "1"}',
                       '{"question": "b", "answer": "2"}', '{"question": "c", answer: 3}')
    with pytest.raises(InputError, match=r"bad\.jsonl:3: not valid JSON") as err:
        load_problems(str(path))
    assert err.value.line == 3


def test_missing_and_empty_answers_name_line_and_field(tmp_path):
    path = write_lines(tmp_path / "rows.jsonl", '{"question": "a", "answer": "1"}', "",
                       '{"question": "b"}')
    with pytest.raises(InputError, match=r"rows\.jsonl:3: field 'answer': is missing or null"):
        load_problems(str(path))
    path = write_lines(tmp_path / "rows.jsonl", '{"question": "a", "answer": "1"}',
                       '{"question": "b", "answer": "  "}')
    with pytest.raises(InputError, match=r"rows\.jsonl:2: field 'answer': is empty"):
        load_problems(str(path))
    with pytest.raises(InputError, match=r"field 'problem': column is missing"):
        load_problems(str(path), columns={"question": "problem"})


def test_builtin_layout_errors(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    write_lines(tmp_path / "gsm8k" / "train.jsonl", json.dumps({"question": "a", "answer": "x\n#### 1,000"}),
                json.dumps({"question": "b", "answer": "7"}))
    with pytest.raises(InputError, match=r"gsm8k/train\.jsonl:2: field 'answer': has no '#### N'"):
        load_problems("gsm8k", data_dir=tmp_path)
    assert load_problems("gsm8k", data_dir=tmp_path, limit=1)["answer"].to_list() == ["1000"]
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "math" / "test.jsonl"))):
        load_problems("math", "test", data_dir=tmp_path)


def test_repeated_questions_and_bad_bytes_name_the_lines(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    write_lines(tmp_path / "gsm8k" / "test.jsonl", *(json.dumps({"question": q, "answer": "x\n#### 1"})
                                                     for q in ("a", "b", "a")))
    with pytest.raises(InputError, match=r"gsm8k/test\.jsonl:3: field 'question': repeats the question of "
                                         r"line 1") as err:
        load_problems("gsm8k", "test", data_dir=tmp_path)
    assert (err.value.line, err.value.field) == (3, "question")
    assert load_problems("gsm8k", "test", data_dir=tmp_path, limit=2).height == 2  # within the limit: unique
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"question": "a", "answer": "1"}\n\n{"question": "\xff", "answer": "1"}\n')
    with pytest.raises(InputError, match=r"rows\.jsonl:3: not UTF-8 text: byte 0xff at column 15"):
        load_problems(str(path))


def test_unknown_source_split_and_mapping_misuse():
    with pytest.raises(CotgenError, match="unknown source 'gsm9k'.*gsm8k, math, math500, rg:TASK"):
        load("gsm9k")
    with pytest.raises(CotgenError, match="math500 has no split 'train'; available: test"):
        load("math500", "train")
    with pytest.raises(CotgenError, match="file sources only"):
        load("gsm8k", columns={"question": "q"})


def test_reasoning_gym_task_options_set_the_difficulty_and_name_the_source():
    spec = "rg:chain_sum:min_terms=2,max_terms=2,max_digits=1"
    df = load_problems(spec, "train", limit=20)
    assert df["source"].unique().to_list() == [spec]
    assert all(q.count("+") + q.count("- ") == 1 for q in df["question"])  # two one-digit terms
    assert all(abs(int(a)) <= 18 for a in df["answer"])
    with pytest.raises(CotgenError, match="bogus=1"):
        load_problems("rg:chain_sum:bogus=1", "train", limit=2)
    with pytest.raises(CotgenError, match="bad task option"):
        load_problems("rg:chain_sum:max_digits", "train", limit=2)
