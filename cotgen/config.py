"""Stage configuration: frozen dataclass defaults < `--config FILE.toml` < command-line flags.

Every stage writes the resolved configuration next to its output (`config.toml`), so a run can be repeated with
`--config that/config.toml`.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from cotgen import __version__
from cotgen.errors import InputError
from cotgen.io import write_text

C = TypeVar("C")


def resolve(cls: type[C], config_path: str | Path | None = None, flags: dict[str, Any] | None = None,
            *, section: str | None = None) -> C:
    """Build `cls` from its defaults, then the TOML file (optionally one `[section]` of it), then non-None flags."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if config_path is not None:
        values.update(_read_toml(Path(config_path), names, section))
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    hints = typing.get_type_hints(cls)
    for key, value in list(values.items()):
        if isinstance(value, list) and "tuple" in str(hints.get(key, "")):
            values[key] = tuple(value)
    return cls(**values)


def flag(*names: str, **kw):
    """A click option that defaults to None, so `resolve` keeps the TOML file's or the dataclass's value unless
    the flag is given (write the real default into the help text)."""
    import click

    return click.option(*names, default=None, show_default=False, **kw)


def _read_toml(path: Path, names: set[str], section: str | None) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(path, "config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise InputError(path, f"not valid TOML: {err}") from None
    data.pop("cotgen", None)  # provenance written by write_resolved
    if section is not None:
        data = data.get(section, {})
    for key in data:
        if key not in names:
            raise InputError(path, f"unknown key (known: {', '.join(sorted(names))})", field=key)
    return data


def run_command(folder: str | Path) -> str | None:
    """The `cotgen` command whose output `folder` holds (from its config.toml), or None."""
    path = Path(folder) / "config.toml"
    if not path.is_file():
        return None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")).get("cotgen", {}).get("command")
    except tomllib.TOMLDecodeError:
        return None


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'key: old -> new, ...' for every key whose value differs ('' when none): the --resume refusal text."""
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The dataclass as TOML-ready values: paths as strings, None dropped."""
    out = {}
    for key, value in dataclasses.asdict(cfg).items():
        if value is None:
            continue
        out[key] = str(value) if isinstance(value, Path) else (list(value) if isinstance(value, tuple) else value)
    return out


def write_resolved(cfg: Any, out_dir: str | Path, command: str) -> Path:
    """Write `out_dir/config.toml` holding every resolved value and which cotgen command produced it."""
    doc = {"cotgen": {"command": command, "version": __version__}, **to_dict(cfg)}
    return write_text(Path(out_dir) / "config.toml", tomli_w.dumps(doc))
