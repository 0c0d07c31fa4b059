"""Problem sources: load any supported data set as one PROBLEM_SCHEMA frame.

`load_problems(spec, split)` understands these specs:

- `gsm8k`, `math`, `math500`: read `<data_dir>/<name>/<split>.jsonl`, in the layout and field names of the
  original releases (as in shared/data). data_dir is the argument, else $COTGEN_DATA_DIR, else the Hugging
  Face hub: `openai/gsm8k` (config "main"), `DigitalLearningGmbH/MATH-lighteval` (the original 7500/5000
  Hendrycks split with its problem/level/type/solution fields) and `HuggingFaceH4/MATH-500`.
- `rg:TASK`: generated offline by reasoning-gym, `limit` items (default 1000). The test split uses seed
  `seed + 1_000_003`, so its per-item random streams never meet train's while size < 1_000_003. Repeated
  questions within a split are dropped, and so are test questions that also occur in the train split of the
  same seed and size (a larger train set may still share a few): a split can hold slightly fewer than `limit`
  rows. `rg:TASK:KEY=VALUE,...` passes options to the task's config (e.g. `rg:chain_sum:min_terms=2,
  max_terms=3,max_digits=1` for easy sums); values are read as JSON where they parse (numbers, true/false),
  else as strings. Warning: `rg:gsm_symbolic` was built from GSM8K *test* questions: never train on it when evaluating
  on GSM8K.
- `PATH.jsonl`, `PATH.json`, `PATH.parquet` or `file:PATH`: any table; `columns` maps question/answer/solution
  to its column names. The source is the file stem, the split is the given label, other columns go to
  metadata.

Gold answers: GSM8K, the text after the last `####` with commas removed (the rationale before it is the
solution); MATH, the last `\\boxed{}` of the solution (about 1% of solutions hold two boxes: the last is
taken; the two MATH train rows whose box is empty are dropped with a warning); MATH-500, its `answer` field;
reasoning-gym, the entry's `answer`. `id` is the first 16 hex characters of sha256("{source}\\n{question}").
Rows keep file order and `limit` keeps the first N. Bad input raises InputError naming the file, the 1-based
line (JSONL) or row, and the field: bytes that are not UTF-8, text that is not JSON, a missing or blank field,
and a question that occurs twice (problem ids hash the question, and the stages key traces by id).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import polars as pl

from cotgen.errors import CotgenError, InputError
from cotgen.io import not_utf8, read_json, read_parquet
from cotgen.schemas import PROBLEM_SCHEMA, check_schema
from cotgen.verify.extract import last_boxed

log = logging.getLogger(__name__)

RG_DEFAULT_SIZE = 1000
RG_TEST_SEED_OFFSET = 1_000_003
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
FILE_FIELDS = ("question", "answer", "solution")


@dataclass(frozen=True)
class _Builtin:
    hub: tuple[str, str | None]  # (repo, config) for datasets.load_dataset
    splits: tuple[str, ...]
    question: str  # the field holding the question
    answer: str  # the field the gold answer is read from
    no_answer: str  # what is wrong when no gold answer can be read from it
    drop_no_answer: bool  # drop such rows with a warning (known defects of the release) instead of failing
    optional: tuple[str, ...]  # fields read into metadata; null when absent
    columns: Callable[[], list[pl.Expr]]  # -> answer, solution, metadata


def _gsm8k() -> list[pl.Expr]:
    final = pl.col("answer").str.extract(r"(?s)^.*####(.*)$")  # greedy: after the last ####
    return [
        final.str.replace_all(",", "", literal=True).str.strip_chars().alias("answer"),
        pl.col("answer").str.extract(r"(?s)^(.*)####").str.strip_chars().alias("solution"),
        pl.lit("{}").alias("metadata"),
    ]


def _math() -> list[pl.Expr]:
    level = pl.col("level").cast(pl.String).str.extract(r"(\d+)").cast(pl.Int64)  # "Level ?" -> null
    return [
        pl.col("solution").map_elements(last_boxed, return_dtype=pl.String).alias("answer"),
        pl.col("solution"),
        pl.struct(level=level, subject=pl.col("type")).struct.json_encode().alias("metadata"),
    ]


def _math500() -> list[pl.Expr]:
    level = pl.col("level").cast(pl.Int64, strict=False)
    return [
        pl.col("answer").str.strip_chars(),
        pl.col("solution").fill_null(""),
        pl.struct(level=level, subject="subject", unique_id="unique_id")
        .struct.json_encode().alias("metadata"),
    ]


BUILTINS = {
    "gsm8k": _Builtin(("openai/gsm8k", "main"), ("train", "test"), "question", "answer",
                      "has no '#### N' final answer", False, (), _gsm8k),
    "math": _Builtin(("DigitalLearningGmbH/MATH-lighteval", None), ("train", "test"), "problem", "solution",
                     "has no \\boxed{} answer", True, ("level", "type"), _math),
    "math500": _Builtin(("HuggingFaceH4/MATH-500", None), ("test",), "problem", "answer",
                        "is empty", False, ("solution", "level", "subject", "unique_id"), _math500),
}


def problem_id(source: str, question: str) -> str:
    return hashlib.sha256(f"{source}\n{question}".encode()).hexdigest()[:16]


def load_problems(spec: str, split: str = "train", *, data_dir: str | Path | None = None,
                  limit: int | None = None, seed: int = 0,
                  columns: dict[str, str] | None = None) -> pl.DataFrame:
    """Load `spec` (see the module docstring) as a PROBLEM_SCHEMA frame in source order."""
    if limit is not None and limit < 0:
        raise CotgenError(f"limit must be >= 0, got {limit}")
    if columns and (spec in BUILTINS or spec.startswith("rg:")):
        raise CotgenError(f"a column mapping applies to file sources only, not {spec!r}")
    if spec in BUILTINS:
        source, df = spec, _load_builtin(spec, split, data_dir, limit)
    elif spec.startswith("rg:"):
        task, _, options = spec[3:].partition(":")
        source, df = spec, _load_rg(task, split, limit, seed, parse_rg_options(spec, options))
    elif spec.startswith("file:") or spec.lower().endswith(FILE_SUFFIXES):
        path = Path(spec.removeprefix("file:"))
        source, df = path.stem, _load_file(path, limit, _check_mapping(columns or {}))
    else:
        known = ", ".join([*BUILTINS, "rg:TASK", "PATH.jsonl|.json|.parquet", "file:PATH"])
        raise CotgenError(f"unknown source {spec!r}; known sources: {known}")
    ids = pl.Series("id", [problem_id(source, q) for q in df["question"]], dtype=pl.String)
    df = df.with_columns(ids, source=pl.lit(source, pl.String), split=pl.lit(split, pl.String))
    return check_schema(df, PROBLEM_SCHEMA, spec)


def parse_columns(text: str) -> dict[str, str]:
    """Parse a CLI column mapping such as `question=problem,answer=final`."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not (sep and key and value):
            raise CotgenError(f"bad column mapping {part!r}: expected FIELD=COLUMN[,FIELD=COLUMN], "
                              "e.g. question=problem,answer=final")
        if key in mapping:
            raise CotgenError(f"column mapping names {key!r} twice: {text!r}")
        mapping[key] = value
    return _check_mapping(mapping)


def _check_mapping(mapping: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(mapping) - set(FILE_FIELDS))
    if unknown:
        raise CotgenError(f"unknown field(s) {', '.join(unknown)} in column mapping; "
                          f"fields: {', '.join(FILE_FIELDS)}")
    return mapping


# ---- built-in data sets -----------------------------------------------------------------------------------


def _load_builtin(name: str, split: str, data_dir: str | Path | None, limit: int | None) -> pl.DataFrame:
    spec = BUILTINS[name]
    if split not in spec.splits:
        raise CotgenError(f"{name} has no split {split!r}; available: {', '.join(spec.splits)}")
    data_dir = data_dir or os.environ.get("COTGEN_DATA_DIR") or None
    if data_dir is not None:
        path = Path(data_dir) / name / f"{split}.jsonl"
        raw, origin = _read_jsonl(path, limit), _Origin(str(path), jsonl=True)
    else:
        raw, origin = _read_hub(name, spec, split, limit)
    raw = _require_text(raw, [spec.question, spec.answer], origin)
    raw = raw.with_columns([pl.lit(None, pl.String).alias(c) for c in spec.optional if c not in raw.columns])
    _require_unique(raw, origin, spec.question)
    df = raw.select(pl.col(spec.question).alias("question"), *spec.columns())
    bad = _first_blank(df, ["answer"])
    if bad is None:
        return df
    error = origin.error(bad[0], spec.answer, spec.no_answer)
    if not spec.drop_no_answer:
        raise error
    kept = df.filter(pl.col("answer").str.strip_chars() != "")  # MATH train: two solutions end in \boxed{}
    log.warning("dropped %d row(s) with no gold answer; the first: %s", df.height - kept.height, error)
    return kept


def _read_hub(name: str, spec: _Builtin, split: str, limit: int | None) -> tuple[pl.DataFrame, _Origin]:
    repo, config = spec.hub
    try:
        import datasets  # lazy: slow import, needs the network

        df = datasets.load_dataset(repo, config, split=split).to_polars()
    except Exception as exc:  # offline, renamed repo, ...: the fix is the same
        raise CotgenError(f"could not load {name} from the Hugging Face hub ({repo}): {exc}. Pass --data-dir "
                          f"or set COTGEN_DATA_DIR to a folder holding {name}/{split}.jsonl") from exc
    return df.head(limit) if limit is not None else df, _Origin(f"hf://{repo}/{split}", jsonl=False)


# ---- reasoning-gym ----------------------------------------------------------------------------------------


def parse_rg_options(spec: str, text: str) -> dict:
    """`min_terms=2,max_digits=1` -> {"min_terms": 2, "max_digits": 1} (JSON values where they parse)."""
    options: dict = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = (t.strip() for t in part.partition("="))
        if not (sep and key.isidentifier() and value):
            raise CotgenError(f"source {spec!r}: bad task option {part!r}; expected rg:TASK:KEY=VALUE[,KEY=VALUE]")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def rg_problems(task: str, size: int, seed: int, options: dict | None = None) -> list[dict]:
    """`size` reasoning-gym items of `task` drawn with `seed` and the task's config `options`, as {question,
    answer (a string, or None), metadata}, repeated questions dropped (the first kept). The one builder behind
    `rg:` sources and recipes' `[problems]`."""
    import reasoning_gym  # lazy: imports ~100 task modules (0.6 s)
    from reasoning_gym.factory import DATASETS

    if task not in DATASETS:
        near = difflib.get_close_matches(task, DATASETS, n=5) or sorted(DATASETS)[:8]
        raise CotgenError(f"unknown reasoning-gym task {task!r}; {len(DATASETS)} tasks, "
                          f"e.g. {', '.join(near)}")
    try:
        items = list(reasoning_gym.create_dataset(task, size=size, seed=seed, **(options or {})))
    except (ValueError, TypeError, AssertionError, KeyError) as exc:
        shown = "".join(f", {k}={v!r}" for k, v in (options or {}).items())
        raise CotgenError(f"reasoning-gym cannot build {task!r} (size={size}, seed={seed}{shown}): {exc}") from exc
    seen, problems = set(), []
    for e in items:
        if e.get("question") not in seen:
            seen.add(e.get("question"))
            problems.append({"question": e.get("question"),
                             "answer": None if e.get("answer") is None else str(e["answer"]),
                             "metadata": e.get("metadata", {})})
    return problems


def _load_rg(task: str, split: str, limit: int | None, seed: int, options: dict | None = None) -> pl.DataFrame:
    if split not in ("train", "test"):
        raise CotgenError(f"rg:{task} has no split {split!r}; available: train, test")
    size = RG_DEFAULT_SIZE if limit is None else limit
    items = rg_problems(task, size, seed + (RG_TEST_SEED_OFFSET if split == "test" else 0), options)
    raw = pl.DataFrame(
        {
            "question": [e["question"] for e in items],
            "answer": [e["answer"] for e in items],
            "solution": [""] * len(items),
            "metadata": [json.dumps(e["metadata"], default=str, separators=(",", ":")) for e in items],
        },
        schema=dict.fromkeys(["question", "answer", "solution", "metadata"], pl.String),
    )
    _require_text(raw, ["question", "answer"], _Origin(f"rg:{task}", jsonl=False))
    if split == "test":
        train = rg_problems(task, size, seed, options)
        return raw.filter(~pl.col("question").is_in([e["question"] for e in train]))
    return raw


# ---- user files -------------------------------------------------------------------------------------------


def _load_file(path: Path, limit: int | None, mapping: dict[str, str]) -> pl.DataFrame:
    names = {field: mapping.get(field, field) for field in FILE_FIELDS}
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        raw, origin = read_parquet(path, n_rows=limit), _Origin(str(path), jsonl=False)
    elif suffix == ".json" and _is_json_array(path):
        raw, origin = _read_json_array(path, limit), _Origin(str(path), jsonl=False)
    elif suffix in (".json", ".jsonl"):
        raw, origin = _read_jsonl(path, limit), _Origin(str(path), jsonl=True)
    else:
        raise CotgenError(f"cannot tell the format of {path}: name a .jsonl, .json or .parquet file")
    for field in ("question", "answer") + (("solution",) if "solution" in mapping else ()):
        if names[field] not in raw.columns:
            raise InputError(path, f"column is missing (map it with --columns {field}=NAME); "
                                   f"columns: {', '.join(raw.columns)}", field=names[field])
    raw = _require_text(raw, [names["question"], names["answer"]], origin)
    has_solution = names["solution"] in raw.columns
    if has_solution:
        raw = _require_text(raw, [names["solution"]], origin, allow_blank=True)
    _require_unique(raw, origin, names["question"])
    rest = [c for c in raw.columns if c not in names.values()]
    return raw.select(
        pl.col(names["question"]).alias("question"),
        pl.col(names["answer"]).str.strip_chars().alias("answer"),
        (pl.col(names["solution"]).fill_null("") if has_solution else pl.lit("", pl.String))
        .alias("solution"),
        (pl.struct(rest).struct.json_encode() if rest else pl.lit("{}", pl.String)).alias("metadata"),
    )


def _is_json_array(path: Path) -> bool:
    if not path.is_file():
        raise InputError(path, "file not found")
    with open(path, "rb") as f:
        return f.read(4096).lstrip().startswith(b"[")


def _read_json_array(path: Path, limit: int | None) -> pl.DataFrame:
    rows = read_json(path)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InputError(path, f"row {i + 1}: expected a JSON object, got {type(row).__name__}")
    return pl.from_dicts(rows[:limit] if limit is not None else rows, infer_schema_length=None)


# ---- JSONL and row checks ---------------------------------------------------------------------------------


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of the non-blank lines: the rows that polars reads."""
    with open(path, "rb") as f:
        for number, data in enumerate(f, 1):
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as err:
                raise not_utf8(path, data, err, line=number) from None
            if line.strip():
                yield number, line


def _read_jsonl(path: Path, limit: int | None) -> pl.DataFrame:
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        df = pl.read_ndjson(path, infer_schema_length=None, n_rows=limit or None)
    except pl.exceptions.PolarsError as exc:  # polars names no line: find the first bad one
        for number, line in _lines(path):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                message = f"not valid JSON: {err.msg} (column {err.colno})"
                raise InputError(path, message, line=number) from None
            if not isinstance(row, dict):
                raise InputError(path, f"expected a JSON object, got {type(row).__name__}", line=number)
        if next(_lines(path), None) is None:
            raise InputError(path, "holds no rows") from None
        raise InputError(path, f"cannot read as JSON lines: {exc}") from exc
    return df.head(limit) if limit is not None else df


@dataclass(frozen=True)
class _Origin:
    """Where rows came from, to name the line (JSONL) or the row (other tables) of a bad value."""

    path: str
    jsonl: bool

    def error(self, row: int, field: str, message: str) -> InputError:
        if not self.jsonl:
            return InputError(self.path, f"row {row + 1}: {message}", field=field)
        number, _ = next(itertools.islice(_lines(self.path), row, None), (None, ""))
        return InputError(self.path, message, line=number, field=field)

    def where(self, row: int) -> str:
        """`line N` (JSONL) or `row N` of a 0-based row."""
        if not self.jsonl:
            return f"row {row + 1}"
        return f"line {next(itertools.islice(_lines(self.path), row, None), (None, ''))[0]}"


def _require_unique(df: pl.DataFrame, origin: _Origin, field: str) -> None:
    """InputError at the first row whose `field` (the question) repeats an earlier row's, naming both."""
    rows = df.select(pl.int_range(pl.len()).alias("_row"), field).filter(pl.col(field).is_duplicated())
    if rows.height == 0:
        return
    first, row = rows.with_columns(pl.col("_row").min().over(field).alias("_first")).filter(
        pl.col("_row") != pl.col("_first")).select("_first", "_row").row(0)
    raise origin.error(row, field, f"repeats the question of {origin.where(first)} (ids hash the question)")


def _first_blank(df: pl.DataFrame, fields: list[str]) -> tuple[int, str] | None:
    """(row, field) of the first null or whitespace-only value among `fields`, or None."""
    blank = [pl.col(f).is_null() | (pl.col(f).str.strip_chars() == "") for f in fields]
    hits = df.with_row_index("_row").filter(pl.any_horizontal(blank)).head(1)
    if hits.height == 0:
        return None
    row = hits.row(0, named=True)
    return row["_row"], next(f for f in fields if row[f] is None or not row[f].strip())


def _require_text(df: pl.DataFrame, fields: list[str], origin: _Origin, *,
                  allow_blank: bool = False) -> pl.DataFrame:
    """Check that `fields` exist as text (numbers are cast) and, unless allow_blank, hold no null or blank."""
    for field in fields:
        if field not in df.columns:
            raise origin.error(0, field, "is missing")
        dtype = df.schema[field]
        if dtype.is_numeric() or dtype == pl.Boolean or dtype == pl.Null:
            df = df.with_columns(pl.col(field).cast(pl.String))
        elif dtype != pl.String:
            raise origin.error(0, field, f"expected text, got {dtype}")
    bad = None if allow_blank else _first_blank(df, fields)
    if bad is not None:
        row, field = bad
        raise origin.error(row, field, "is empty" if df[field][row] is not None else "is missing or null")
    return df
