"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""

from __future__ import annotations

from pathlib import Path


class CotgenError(Exception):
    """A problem with the user's input or environment; printed without a traceback."""


class InputError(CotgenError):
    """Bad input data: names the file, the line (1-based, when known) and the field."""

    def __init__(self, path: str | Path, message: str, *, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")
