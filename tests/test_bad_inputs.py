"""Bad input through the real CLI (issue 14): one `error:` line naming the file (and line, row or field),
exit status 2, no traceback, and the --out left as it was (absent, or unchanged), no temporary files left."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from test_eval_compare import write_run
from test_filter_run import trace_rows, write_problems

import cotgen.io
from cotgen.cli import main
from cotgen.errors import CotgenError, InputError
from cotgen.io import atomic_dir, atomic_path, read_json, write_text
from cotgen.schemas import TRACE_SCHEMA


def fails(args: list[str]) -> str:
    """Run `cotgen ARGS`; check it failed as a user error should; return the error line."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    return errors[0]


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if p.name.endswith(".tmp")]


def problems_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---- problem files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, data, message", [
    ("p.jsonl", b'{"question": "1+1?", "answer": "2"}\n{"question": "Caf\xe9?", "answer": "3"}\n',
     "p.jsonl:2: not UTF-8 text: byte 0xe9 at column 18"),
    ("p.json", b'[{"question": "1+1?", "answer": "2"},\n {"question": "Caf\xe9?", "answer": "3"}]',
     "p.json:2: not UTF-8 text: byte 0xe9 at column 19"),
])
def test_problem_file_not_utf8(tmp_path, name, data, message):
    out = tmp_path / "out.parquet"
    line = fails(["problems", str(problems_file(tmp_path, name, data)), "--out", str(out)])
    assert message in line, line
    assert not out.exists() and not out.with_suffix(".toml").exists() and no_temporaries(tmp_path)


def test_duplicate_questions_are_refused_where_loaded(tmp_path):
    rows = [{"question": "Q one?", "answer": "1"}, {"question": "Q two?", "answer": "2"},
            {"question": "Q two?", "answer": "2"}, {"question": "Q one?", "answer": "1"}]
    lines = [json.dumps(rows[0]), "", *map(json.dumps, rows[1:])]  # line 2 blank: numbers are the file's
    jsonl = problems_file(tmp_path, "dup.jsonl", "\n".join(lines).encode() + b"\n")
    out = tmp_path / "out.parquet"
    # the first repeat in file order is named: Q two, lines 3 and 4 (Q one repeats later, on line 5)
    assert "dup.jsonl:4: field 'question': repeats the question of line 3" in fails(
        ["problems", str(jsonl), "--out", str(out)])
    table = tmp_path / "dup.parquet"
    pl.DataFrame({"problem": [r["question"] for r in rows],
                  "final": [r["answer"] for r in rows]}).write_parquet(table)
    assert "dup.parquet: field 'problem': row 3: repeats the question of row 2" in fails(
        ["problems", str(table), "--columns", "question=problem,answer=final", "--out", str(out)])
    assert not out.exists() and no_temporaries(tmp_path)


def test_filter_names_repeated_ids_of_a_problems_parquet(tmp_path):
    write_problems(tmp_path / "problems.parquet")
    df = pl.read_parquet(tmp_path / "problems.parquet")
    pl.concat([df, df.head(1)]).write_parquet(tmp_path / "problems.parquet")
    traces = tmp_path / "traces"
    traces.mkdir()
    pl.DataFrame(trace_rows()[:3], schema=TRACE_SCHEMA).write_parquet(traces / "traces-all-00000.parquet")
    line = fails(["filter", "--traces", str(traces), "--problems", str(tmp_path / "problems.parquet"),
                  "--out", str(tmp_path / "data"), "--workers", "1"])
    assert f"problems.parquet: field 'id': row {df.height + 1}: repeats the problem id of row 1" in line
    assert not (tmp_path / "data").exists()


# ---- problems --out ----------------------------------------------------------------------------------------


def test_problems_out_refuses_to_overwrite_unless_asked(tmp_path):
    source = problems_file(tmp_path, "ok.jsonl", b'{"question": "1+1?", "answer": "2"}\n')
    out = tmp_path / "p.parquet"
    out.write_bytes(b"mine")
    line = fails(["problems", str(source), "--out", str(out)])
    assert f"--out {out} exists; pass --overwrite to replace it" in line
    assert out.read_bytes() == b"mine" and not out.with_suffix(".toml").exists()
    result = CliRunner().invoke(main, ["problems", str(source), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out)["answer"].to_list() == ["2"]
    assert 'command = "problems"' in out.with_suffix(".toml").read_text()


def test_problems_out_under_a_file(tmp_path):
    source = problems_file(tmp_path, "ok.jsonl", b'{"question": "1+1?", "answer": "2"}\n')
    out = source / "sub" / "p.parquet"
    assert fails(["problems", str(source), "--out", str(out)]) == (
        f"error: cannot write {out}: {source} is a file, not a folder")
    assert source.read_bytes() == b'{"question": "1+1?", "answer": "2"}\n'


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_problems_out_in_a_read_only_folder(tmp_path):
    source = problems_file(tmp_path, "ok.jsonl", b'{"question": "1+1?", "answer": "2"}\n')
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    try:
        assert f"cannot write {folder / 'p.parquet'}: Permission denied" in fails(
            ["problems", str(source), "--out", str(folder / "p.parquet")])
        assert not list(folder.iterdir())
    finally:
        folder.chmod(0o755)


# ---- filter ------------------------------------------------------------------------------------------------


def _traces(tmp_path: Path, chunks: int = 1) -> tuple[Path, Path]:
    """A traces folder of `chunks` chunks of 72 rows in row groups of 8, and the problems they answer."""
    traces = tmp_path / "traces"
    traces.mkdir()
    for k in range(chunks):
        rows = [dict(r, sample_idx=100 * k + i) for i, r in enumerate(trace_rows() * 4)]
        pl.DataFrame(rows, schema=TRACE_SCHEMA).write_parquet(
            traces / f"traces-all-{k:05d}.parquet", row_group_size=8, compression="zstd")
    return traces, write_problems(tmp_path / "problems.parquet")


def test_filter_chunk_damaged_mid_file_after_earlier_batches(tmp_path, caplog):
    traces, problems = _traces(tmp_path, chunks=2)
    chunk = traces / "traces-all-00001.parquet"
    group = pq.ParquetFile(chunk).metadata.row_group(8).column(0)  # problem_id of its last rows
    start = group.dictionary_page_offset or group.data_page_offset
    data = bytearray(chunk.read_bytes())
    data[start:start + group.total_compressed_size] = b"\xff" * group.total_compressed_size
    chunk.write_bytes(bytes(data))
    assert pl.read_parquet_schema(chunk)  # the footer is intact: only reading the rows fails
    (tmp_path / "filter.toml").write_text("batch_rows = 8\nworkers = 1\n")
    out = tmp_path / "data"
    with caplog.at_level(logging.INFO, logger="cotgen.filter.run"):
        line = fails(["filter", "--config", str(tmp_path / "filter.toml"), "--traces", str(traces),
                      "--problems", str(problems), "--out", str(out)])
    assert "scored traces-all-00000.parquet, batch 8" in caplog.text  # the first chunk was scored
    assert line.startswith(f"error: {chunk}: rows ")
    assert "cannot read as Parquet (damaged or truncated?)" in line
    assert not out.exists() and no_temporaries(tmp_path)


def test_filter_chunk_truncated(tmp_path):
    traces, problems = _traces(tmp_path)
    chunk = traces / "traces-all-00000.parquet"
    chunk.write_bytes(chunk.read_bytes()[:2000])
    out = tmp_path / "data"
    line = fails(["filter", "--traces", str(traces), "--problems", str(problems), "--out", str(out)])
    assert line.startswith(f"error: {chunk}: cannot read as Parquet"), line
    assert not (tmp_path / "data").exists()


def test_filter_traces_config_not_utf8(tmp_path):
    traces, _ = _traces(tmp_path)
    (traces / "config.toml").write_bytes(b'source = "caf\xe9"\n')
    line = fails(["filter", "--traces", str(traces), "--out", str(tmp_path / "data")])
    assert f"{traces / 'config.toml'}:1: not UTF-8 text" in line
    assert not (tmp_path / "data").exists()


def test_filter_out_under_a_file(tmp_path):
    traces, problems = _traces(tmp_path)
    out = problems / "data"
    line = fails(["filter", "--traces", str(traces), "--problems", str(problems), "--out", str(out),
                  "--workers", "1"])
    assert line == f"error: cannot write {out}: {problems} is a file, not a folder"
    assert no_temporaries(tmp_path)


# ---- generate ----------------------------------------------------------------------------------------------


def _generate(tmp_path: Path, out: Path) -> list[str]:
    source = problems_file(tmp_path, "ok.jsonl", b'{"question": "1+1?", "answer": "2"}\n')
    return ["generate", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--teacher", "t",
            "--source", str(source), "--out", str(out)]


def test_generate_out_under_a_file(tmp_path):
    out = tmp_path / "ok.jsonl" / "traces"
    line = fails(_generate(tmp_path, out))
    assert line == f"error: cannot write {out}: {tmp_path / 'ok.jsonl'} is a file, not a folder"


@pytest.mark.parametrize("data, message", [(b'{"params": "caf\xe9"}', "manifest.json:1: not UTF-8 text"),
                                           (b'{"params": ', "manifest.json:1: not valid JSON"),
                                           (b"[]", "manifest.json: field 'params': expected a JSON object")])
def test_generate_bad_manifest(tmp_path, data, message):
    out = tmp_path / "traces"
    out.mkdir()
    (out / "manifest.json").write_bytes(data)
    assert message in fails(_generate(tmp_path, out))
    assert (out / "manifest.json").read_bytes() == data and not list(out.glob("traces-*"))


# ---- eval --compare ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("file, data, message", [
    ("metrics.json", b'{"protocol": {"model": "caf\xe9"}}', ":1: not UTF-8 text: byte 0xe9 at column 28"),
    ("metrics.json", b'{"protocol":\n {"model": ', ":2: not valid JSON: Expecting value (column 12)"),
    ("metrics.json", b"[1, 2]", ": expected a JSON object, got list"),
    ("metrics.json", b'{"protocol": 3}', ": field 'protocol': expected a JSON object, got int"),
    ("samples.parquet", None, ": cannot read as Parquet"),  # truncated
    ("samples.parquet", b"not parquet", ": cannot read as Parquet"),
])
def test_compare_malformed_run(tmp_path, file, data, message):
    a = write_run(tmp_path / "a", [True, False, True])
    b = write_run(tmp_path / "b", [True, True, True])
    path = b / file
    path.write_bytes(path.read_bytes()[:300] if data is None else data)
    out = tmp_path / "cmp"
    line = fails(["eval", "--compare", str(a), str(b), "--out", str(out)])
    assert line.startswith(f"error: {b / file}{message}"), line
    assert not out.exists()


def test_compare_out_under_a_file(tmp_path):
    a = write_run(tmp_path / "a", [True, False, True])
    out = a / "metrics.json" / "cmp"
    assert fails(["eval", "--compare", str(a), str(a), "--out", str(out)]) == (
        f"error: cannot write --out {out}: it is under {a / 'metrics.json'}, a file, not a folder")


def test_eval_out_is_checked_before_any_sampling(tmp_path, monkeypatch):
    from cotgen.eval import engine

    def never(*_a, **_k):
        raise AssertionError("sampled before checking --out")

    monkeypatch.setattr(engine, "sample", never)
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "eval"
    line = fails(["eval", "--model", "tiny", "--backend", "tunix", "--source", "gsm8k", "--split", "test",
                  "--limit", "2", "--out", str(out)])
    assert line == f"error: cannot write --out {out}: it is under {tmp_path / 'file'}, a file, not a folder"


# ---- the CLI and cotgen.io ---------------------------------------------------------------------------------


def test_an_oserror_naming_a_file_is_one_line(monkeypatch, tmp_path):
    from cotgen import sources

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/runs/x")

    monkeypatch.setattr(sources, "load_problems", denied)
    assert fails(["problems", "gsm8k"]) == "error: Permission denied: /runs/x"

    def bug(*args, **kwargs):
        raise OSError("no file involved")

    monkeypatch.setattr(sources, "load_problems", bug)
    result = CliRunner().invoke(main, ["problems", "gsm8k"])
    assert isinstance(result.exception, OSError)  # a bug keeps its traceback


def test_a_wrapped_message_prints_as_one_line(monkeypatch):
    from cotgen import sources

    def wrapped(*args, **kwargs):
        raise CotgenError("model did not load (ValidationError: 1 validation error\n  Value error, too long)")

    monkeypatch.setattr(sources, "load_problems", wrapped)
    assert fails(["problems", "gsm8k"]) == (
        "error: model did not load (ValidationError: 1 validation error Value error, too long)")


def test_atomic_writes_fsync_before_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("rename", str(a))), real_replace(a, b)))
    monkeypatch.setattr(os, "rename", lambda a, b: (events.append(("rename", str(a))), real_rename(a, b)))
    write_text(tmp_path / "a.txt", "hello")
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "rename", "fsync"]  # the file, the rename, its folder
    assert events[0][1] == events[1][1]  # the temporary file itself was flushed
    events.clear()
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x.bin").write_bytes(b"1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "y.bin").write_bytes(b"2")
    renamed = [kind for kind, _ in events].index("rename")
    synced = [path for kind, path in events[:renamed] if kind == "fsync"]
    assert any(p.endswith("x.bin") for p in synced) and any(p.endswith("y.bin") for p in synced)
    assert (tmp_path / "d" / "sub" / "y.bin").read_bytes() == b"2"


def test_a_failed_write_leaves_the_target_as_it_was(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and no_temporaries(tmp_path)
    with pytest.raises(CotgenError, match="is a directory|Is a directory"):
        write_text(tmp_path, "x")


def test_read_json_names_file_and_line(tmp_path):
    path = tmp_path / "m.json"
    path.write_bytes(b'{\n  "a": "\xc3\xa9",\n  "b": "\xff"\n}')
    with pytest.raises(InputError, match=r"m.json:3: not UTF-8 text: byte 0xff at column 9"):
        read_json(path)
    path.write_text('{\n  "a": 1,\n}')
    with pytest.raises(InputError, match=r"m.json:3: not valid JSON"):
        read_json(path)
    with pytest.raises(InputError, match="file not found"):
        read_json(tmp_path / "none.json")
    assert cotgen.io.read_text(path).startswith("{")


@pytest.mark.parametrize("args", [
    ["train", "--model", "tiny", "--data", "DATA"],
    ["rl", "--model", "tiny", "--source", "rg:chain_sum", "--limit", "8", "--eval-size", "2"],
    ["distill", "train", "--student", "tiny", "--teacher", "tiny", "--data", "DATA"],
])
def test_training_out_under_a_file_is_refused_before_any_model_loads(tmp_path, monkeypatch, args):
    """train, rl and distill check --out with the run folder (`cotgen.runs.check_out`), before the weights."""
    from cotgen.models import load as load_mod

    def never(*_a, **_k):
        raise AssertionError("loaded a model before checking --out")

    monkeypatch.setattr(load_mod, "load", never)
    from cotgen import prompts

    data = tmp_path / "data"
    data.mkdir()
    pl.DataFrame([{"problem_id": f"p{k}", "question": f"What is {k} + 1?",
                   "prompt": prompts.student_prompt(f"What is {k} + 1?"),
                   "completion": prompts.student_target(f"{k} + 1 = {k + 1}.", str(k + 1))} for k in range(4)]
                 ).write_parquet(data / "train.parquet")
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "run"
    line = fails([a.replace("DATA", str(data)) for a in args] + ["--out", str(out)])
    assert line == f"error: cannot write --out {out}: it is under {tmp_path / 'file'}, a file, not a folder", line
