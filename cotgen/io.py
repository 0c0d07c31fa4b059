"""Atomic file output and checked input.

Output: write to a temporary name in the same folder, fsync it, rename it over the target, fsync the folder:
a reader (or a crash) sees the old file or the new one, never half of one. A target that cannot be written
(a read-only folder, a path through a file) raises CotgenError naming it. Input: `read_text` and `read_json`
raise InputError naming the file and line of bytes that are not UTF-8 or of text that is not JSON;
`read_parquet`, `read_parquet_schema` and `collect_parquet` (a lazy scan) raise it naming a missing, corrupt or
truncated Parquet file, in one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from cotgen.errors import CotgenError, InputError

if TYPE_CHECKING:
    import polars as pl

_UMASK = os.umask(0o022)  # read the process umask (setting it back at once)
os.umask(_UMASK)


def cannot_write(path: Path, err: OSError) -> CotgenError:
    """CotgenError for an OSError met writing `path`, naming the file in the way if a parent is one."""
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        return CotgenError(f"cannot write {path}: {above} is a file, not a folder")
    where = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
    return CotgenError(f"cannot write {path}: {err.strerror or err}{where}")


def check_writable(path: str | Path, *, flag: str = "--out") -> None:
    """Before any work: `path` (an output folder, made later) can be made. The nearest existing folder at or
    above it must be a folder this process may write into; nothing is created."""
    path = Path(path)
    above = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not above.is_dir():
        what = "is a file" if above == path else f"is under {above}, a file"
        raise CotgenError(f"cannot write {flag} {path}: it {what}, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise CotgenError(f"cannot write {flag} {path}: {above} is not writable")


def fsync(path: Path, *, folder: bool = False) -> None:
    """Flush `path` (a file, or a folder's entries) to disk; folders are skipped where the OS refuses."""
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if folder else 0))
    except OSError:
        if folder:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


def temporary_beside(path: Path, *, folder: bool = False) -> Path:
    """A new temporary file (or folder) beside `path`, parent folders made; CotgenError if it cannot be."""
    try:
        if not folder and path.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        if folder:
            return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise cannot_write(path, err) from None
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it to `path`, else delete it."""
    path = Path(path)
    tmp_path = temporary_beside(path)
    try:
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        yield tmp_path
        try:
            fsync(tmp_path)
            os.replace(tmp_path, path)
        except OSError as err:
            raise cannot_write(path, err) from None
        fsync(path.parent, folder=True)
    finally:
        tmp_path.unlink(missing_ok=True)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 16 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        try:
            tmp.write_text(text, encoding="utf-8")
        except OSError as err:  # a full disk, ...
            raise cannot_write(Path(path), err) from None
    return Path(path)


def write_parquet(df: "pl.DataFrame", path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        try:
            df.write_parquet(tmp)
        except OSError as err:
            raise cannot_write(Path(path), err) from None
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success fsync its files and rename it to `path`.

    If another process created `path` first, its folder wins and ours is discarded (both hold the same content).
    """
    path = Path(path)
    tmp = temporary_beside(path, folder=True)
    try:
        yield tmp
        for folder, _, files in os.walk(tmp):
            for name in files:
                if not os.path.islink(os.path.join(folder, name)):
                    fsync(Path(folder, name))
            fsync(Path(folder), folder=True)
        try:
            os.rename(tmp, path)
        except OSError as err:
            if not path.is_dir():
                raise cannot_write(path, err) from None
        fsync(path.parent, folder=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_text(path: str | Path) -> str:
    """The UTF-8 text of `path`; InputError when it is missing, unreadable or not UTF-8 (naming the line)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except OSError as err:
        raise InputError(path, f"cannot read: {err.strerror or err}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise not_utf8(path, data, err) from None


def not_utf8(path: str | Path, data: bytes, err: UnicodeDecodeError, *, line: int | None = None
             ) -> InputError:
    """InputError for bytes of `data` (the whole file, or its 1-based `line`) that are not UTF-8."""
    start = data.rfind(b"\n", 0, err.start) + 1
    line = (line or 1) + data.count(b"\n", 0, err.start)
    return InputError(path, f"not UTF-8 text: byte 0x{data[err.start]:02x} at column {err.start - start + 1} "
                            "(save the file as UTF-8)", line=line)


def read_json(path: str | Path):
    """The JSON document in `path`; InputError naming the file and line when it is not UTF-8 or not JSON."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON: {err.msg} (column {err.colno})", line=err.lineno) from None


def unreadable_parquet(path: str | Path, err: Exception, *, what: str = "") -> InputError:
    """InputError for a Parquet file polars could not read: the first paragraph of its message, on one line
    (polars may append the query plan after a blank line); `what` says which part was being read."""
    message = " ".join(str(err).split("\n\n")[0].split())
    return InputError(path, f"{what}cannot read as Parquet (damaged or truncated?): {message}")


def read_parquet(path: str | Path, *, columns: Sequence[str] | None = None, n_rows: int | None = None,
                 missing: str = "file not found") -> "pl.DataFrame":
    """The Parquet file `path` (only `columns`, the first `n_rows`); InputError naming it when it is not a file
    (`missing` says what to do about that) or cannot be read."""
    import polars as pl

    path = Path(path)
    if not path.is_file():
        raise InputError(path, missing)
    try:
        return pl.read_parquet(path, columns=list(columns) if columns is not None else None, n_rows=n_rows)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise unreadable_parquet(path, err) from None


def read_parquet_schema(path: str | Path, *, missing: str = "file not found") -> "dict[str, pl.DataType]":
    """Column name -> dtype from the footer of `path`; InputError as `read_parquet`."""
    import polars as pl

    path = Path(path)
    if not path.is_file():
        raise InputError(path, missing)
    try:
        return pl.read_parquet_schema(path)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise unreadable_parquet(path, err) from None


def collect_parquet(path: str | Path, lf: "pl.LazyFrame", *, what: str = "") -> "pl.DataFrame":
    """`lf.collect()` of a scan of `path`; data damaged past the footer raises InputError naming the file and
    `what` was being read ("rows 9-16: ")."""
    import polars as pl

    try:
        return lf.collect()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise unreadable_parquet(path, err, what=what) from None
