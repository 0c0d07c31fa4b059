"""The output folder of `cotgen generate`: Parquet chunks, manifests, the done set, the parameter check.

Layout of OUT (every file written to a temporary name and renamed, so a reader never sees half a file):

    traces-{tag}-{k:05d}.parquet   one committed chunk (TRACE_SCHEMA); tag: `all` or `s{I}of{N}` (--shard I/N)
    manifest[-{tag}].json          parameters, problems, counts, timings, tokens/s; rewritten every chunk
    config[-{tag}].toml            the resolved configuration, to repeat the run with --config

Exactly once: a (problem_id, sample_idx) is done when some chunk holds a row for it with no error. A run reads
every chunk (all shards) first and asks only for what is not done; a chunk is committed by one rename, so a
kill loses at most the chunk in flight, never a committed one. Keys whose rows all carry errors are asked for
again. `read_traces` is how later stages read a folder: all chunks, one row per key (a finished row where
there is one). A lock file per tag stops two processes from writing the same shard at once. A chunk or
manifest that cannot be read raises InputError naming it.
"""

from __future__ import annotations

import fcntl
import json
import re
from pathlib import Path

import polars as pl

from cotgen.errors import CotgenError, InputError
from cotgen.io import cannot_write, read_json, read_parquet, write_parquet, write_text
from cotgen.schemas import TRACE_SCHEMA, check_schema

CHUNK_RE = re.compile(r"^traces-(?P<tag>all|s\d+of\d+)-(?P<k>\d{5,})\.parquet$")


def chunk_files(out: str | Path) -> list[Path]:
    return sorted(p for p in Path(out).glob("traces-*.parquet") if CHUNK_RE.match(p.name))


def read_traces(out: str | Path, *, keep_errors: bool = False) -> pl.DataFrame:
    """Every chunk of OUT, checked against TRACE_SCHEMA, one row per (problem_id, sample_idx): the first
    finished row; keys with only error rows are dropped unless keep_errors (then their last error row is
    kept)."""
    files = chunk_files(out)
    if not files:
        return pl.DataFrame(schema=TRACE_SCHEMA)
    df = pl.concat([check_schema(read_parquet(f), TRACE_SCHEMA, str(f)) for f in files])
    df = df.with_row_index("_order").sort(pl.col("error").is_not_null(), "_order", maintain_order=True)
    df = df.unique(["problem_id", "sample_idx"], keep="first", maintain_order=True).sort("_order")
    if not keep_errors:
        df = df.filter(pl.col("error").is_null())
    return df.drop("_order")


class Output:
    """OUT as seen by one run (one shard tag)."""

    def __init__(self, out: str | Path, tag: str):
        self.dir, self.tag = Path(out), tag
        self.suffix = "" if tag == "all" else f"-{tag}"
        self._lock = None

    @property
    def manifest_path(self) -> Path:
        return self.dir / f"manifest{self.suffix}.json"

    @property
    def config_name(self) -> str:
        return f"config{self.suffix}.toml"

    def open(self, identity: dict) -> None:
        """Create OUT, take the shard's lock, refuse other parameters, drop temporary files of killed runs."""
        if self.dir.exists() and not self.dir.is_dir():
            raise CotgenError(f"--out {self.dir} exists and is not a folder")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.dir / f".lock-{self.tag}", "w")  # noqa: SIM115 - held until close()
        except OSError as err:
            raise cannot_write(self.dir, err) from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CotgenError(f"another cotgen generate is writing {self.dir} ({self.tag}); wait for it "
                              "or use another --out") from None
        self.check(identity)
        for tmp in self.dir.glob(f".traces-{self.tag}-*.tmp"):
            tmp.unlink(missing_ok=True)

    def check(self, identity: dict) -> None:
        for path in sorted(self.dir.glob("manifest*.json")):
            doc = read_json(path)
            old = doc.get("params", {}) if isinstance(doc, dict) else None
            if not isinstance(old, dict):
                raise InputError(path, "expected a JSON object with a params object", field="params")
            diff = [f"{k}={old.get(k)!r} (now {v!r})" for k, v in identity.items() if old.get(k) != v]
            if diff:
                raise CotgenError(f"{self.dir} holds traces generated with other parameters ({path.name}): "
                                  f"{', '.join(diff)}; use the same parameters to resume, or another --out")
        if chunk_files(self.dir) and not list(self.dir.glob("manifest*.json")):
            raise CotgenError(f"{self.dir} holds traces but no manifest: cannot tell their parameters")

    def done(self) -> pl.DataFrame:
        """(problem_id, sample_idx) of every finished sample in OUT, all shards."""
        files = chunk_files(self.dir)
        if not files:
            return pl.DataFrame(schema={"problem_id": pl.String, "sample_idx": pl.Int64})
        keys = pl.concat([read_parquet(f, columns=["problem_id", "sample_idx", "error"]) for f in files])
        return keys.filter(pl.col("error").is_null()).select("problem_id", "sample_idx").unique()

    def next_index(self) -> int:
        ks = [int(m["k"]) for p in chunk_files(self.dir)
              if (m := CHUNK_RE.match(p.name)) and m["tag"] == self.tag]
        return max(ks, default=-1) + 1

    def commit(self, rows: pl.DataFrame) -> Path:
        """Write one chunk atomically under the next free index."""
        path = self.dir / f"traces-{self.tag}-{self.next_index():05d}.parquet"
        return write_parquet(check_schema(rows, TRACE_SCHEMA, str(path)), path)

    def write_manifest(self, manifest: dict) -> Path:
        return write_text(self.manifest_path, json.dumps(manifest, indent=2, default=str) + "\n")

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
