"""Stage configuration: frozen dataclass defaults < `--config FILE.toml` < command-line flags.

Every value given (flag, `--config` key, recipe key) is checked against its dataclass field's annotation before
the config is built (`construct`): int, float (finite), bool, str, Path, `X | None`, `tuple[...]`, `Literal`;
no bool for an int, no "10" for an int, an int is fine for a float. Some ranges hold for every config, by field
name: time-outs are > 0, worker counts bounded (`LIMITS`); each config's `__post_init__` checks the rest (enums
name their allowed values). An error is one line naming where the value came from: the file and key, or the
command line and the flag.

Every stage writes the resolved configuration next to its output (`config.toml`), so a run can be repeated with
`--config that/config.toml`. Option help shows the dataclass default (`defaults_from`), never a hand-typed one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from cotgen import MAX_WORKERS, __version__
from cotgen.errors import CotgenError, InputError
from cotgen.io import read_text, write_text

C = TypeVar("C")

# field name -> (lowest, highest) allowed, for every config that has the field
LIMITS = {"workers": (0, MAX_WORKERS),  # filter's symbolic-check processes; 0: min(4, CPUs)
          "concurrency": (1, 1024)}  # openai requests in flight


class FieldError(CotgenError):
    """A value its field does not take. `key`: the field (None when the config's own check names no field that
    was given); `typed`: the type or range check of `construct` failed (else `message` is the config's own,
    naming the flag)."""

    def __init__(self, key: str | None, message: str, *, typed: bool):
        self.key, self.message, self.typed = key, message, typed
        super().__init__(message)


def resolve(cls: type[C], config_path: str | Path | None = None, flags: dict[str, Any] | None = None,
            *, section: str | None = None) -> C:
    """Build `cls` from its defaults, then the TOML file (optionally one `[section]` of it), then non-None flags."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if config_path is not None:
        values.update(_read_toml(Path(config_path), names, section))
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    values.update(given)
    try:
        return construct(cls, values)
    except FieldError as err:
        raise _located(err, None if err.key in given else config_path) from None


def _located(err: FieldError, path: str | Path | None) -> CotgenError:
    """`err` naming where its value came from: the config file and key, or (path None) the command line and
    the flag."""
    if err.key is None:
        return CotgenError(err.message)
    if path is not None:
        return InputError(path, err.message, field=err.key)
    name = _flag_name(err.key)
    if err.typed:
        return InputError("command line", err.message, field=name)
    return InputError("command line", err.message if name in err.message else f"{name}: {err.message}")


def construct(cls: type[C], values: dict[str, Any]) -> C:
    """`cls(**values)` once every value has passed its field's type and range check (str -> Path and list ->
    tuple converted); a config's own check that fails is blamed on the first given field its message names."""
    hints = typing.get_type_hints(cls)
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = _check(hints[key], value) if key in hints else value
            _check_range(key, checked[key])
        except _Mismatch as err:
            expected = _range_text(key) or err.expected
            raise FieldError(key, f"expected {expected}, got {_show(value)}", typed=True) from None
    try:
        return cls(**checked)
    except InputError:
        raise
    except CotgenError as err:
        raise FieldError(_blamed(str(err), values), str(err), typed=False) from None


def _blamed(message: str, values: dict[str, Any]) -> str | None:
    """The given field a config's error is about: the first --flag it names that was given, else the first given
    field it names as a word ('unknown backend ...')."""
    named = [k.replace("-", "_") for k in re.findall(r"--([a-z][a-z0-9-]*)", message)]
    words = [k for k in values if len(k) > 2 and re.search(rf"\b{k}\b", message)]
    return next((k for k in named if k in values), None) or next(iter(words), None)


class _Mismatch(Exception):
    def __init__(self, expected: str):
        self.expected = expected


def _check(tp: Any, value: Any) -> Any:
    """`value` as field type `tp` takes it, or _Mismatch naming what was expected."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for arg in options:
            try:
                return _check(arg, value)
            except _Mismatch as err:
                if len(options) == 1:
                    raise
                last = err
        raise _Mismatch(_describe(tp)) from last
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Mismatch(_describe(tp))
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(_describe(tp))
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if args and len(items) != len(value):
            raise _Mismatch(_describe(tp))
        try:
            return tuple(_check(a, v) for a, v in zip(items, value)) if args else tuple(value)
        except _Mismatch:
            raise _Mismatch(_describe(tp)) from None
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return value  # an int stays an int: the recipe's records compare values as given
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
    else:
        return value  # an annotation this checker does not know: the config's own check decides
    raise _Mismatch(_describe(tp))


def _check_range(key: str, value: Any) -> None:
    """The ranges every config shares: time-outs > 0 (every float is finite already), LIMITS."""
    if value is None or isinstance(value, bool):
        return
    if "timeout" in key and not value > 0:
        raise _Mismatch(_range_text(key))
    if key in LIMITS and not LIMITS[key][0] <= value <= LIMITS[key][1]:
        raise _Mismatch(_range_text(key))


def _range_text(key: str) -> str | None:
    if "timeout" in key:
        return "a finite number of seconds > 0"
    if key in LIMITS:
        return f"an integer in [{LIMITS[key][0]}, {LIMITS[key][1]}]"
    return None


_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
          Path: "a path (a string)"}


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return f"one of {', '.join(map(repr, args))}"
    if origin is tuple or tp is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})" if args else "a list"
    return _NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _show(value: Any) -> str:
    kinds = {str: "a string", bool: "a boolean", list: "a list", tuple: "a list", dict: "a table"}
    kind = next((name for t, name in kinds.items() if type(value) is t), None)
    return f"{value!r} ({kind})" if kind else repr(value)


def _flag_name(key: str) -> str:
    """The option of the running click command whose value is `key` ('--timeout-s'), else the likely one."""
    import sys

    click = sys.modules.get("click")
    ctx = click.get_current_context(silent=True) if click else None
    for param in ctx.command.params if ctx else ():
        if param.name == key and param.opts:
            return max(param.opts, key=len)
    return f"--{key.replace('_', '-')}"


def flag(*names: str, unset: str | None = None, **kw):
    """A click option that defaults to None, so `resolve` keeps the TOML file's or the dataclass's value unless
    the flag is given. Its help gets the dataclass default from `defaults_from`; `unset` says what a default of
    None means ('2 x rank')."""
    import click

    if unset is not None:
        kw["help"] = f"{kw.get('help') or ''}  [default: {unset}]".lstrip()
    return click.option(*names, default=None, show_default=False, **kw)


def defaults_from(cls_path: str):
    """Decorate a click command (above `@click.command`): when its help is shown, every option whose value is a
    field of the config class `cls_path` ("module:Class", imported only then, so the CLI stays light) shows the
    field's default; a boolean on/off pair shows the side that is the default."""

    def apply(command):
        format_help = command.format_help

        def with_defaults(ctx, formatter):
            show_defaults(command, config_class(cls_path))
            format_help(ctx, formatter)

        command.format_help = with_defaults
        return command

    return apply


def show_defaults(command, cls: type) -> None:
    """Append '[default: X]' to the help of `command`'s options that are fields of `cls` (once)."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    for param in command.params:
        text = default_text(param, defaults[param.name]) if param.name in defaults else None
        if text is not None and "[default:" not in (param.help or ""):
            param.help = f"{param.help}  [default: {text}]" if param.help else f"[default: {text}]"


def config_class(path: str) -> type:
    """What "module:name" names (a config class; `cotgen.runs` also names functions this way)."""
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def default_text(param, default: Any) -> str | None:
    """How the help shows `param`'s dataclass default; None: nothing to show (None, empty, a lone on-flag)."""
    if default is None or default == "" or default == ():
        return None
    if isinstance(default, bool):
        if not getattr(param, "secondary_opts", None):
            return None  # a lone --flag: leaving it out is the default
        return param.opts[0] if default else param.secondary_opts[0]
    if isinstance(default, tuple):
        return ", ".join(map(str, default))
    return str(default)


def _read_toml(path: Path, names: set[str], section: str | None) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(path, "config file not found")
    data = read_toml_file(path)
    data.pop("cotgen", None)  # provenance written by write_resolved
    if section is not None:
        data = data.get(section, {})
    for key in data:
        if key not in names:
            raise InputError(path, f"unknown key (known: {', '.join(sorted(names))})", field=key)
    return data


def read_toml_file(path: Path) -> dict[str, Any]:
    """A TOML file's tables, or one InputError naming the file: unreadable, not UTF-8, not valid TOML."""
    text = read_text(path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InputError(path, f"not valid TOML: {err}") from None


def run_command(folder: str | Path) -> str | None:
    """The `cotgen` command whose output `folder` holds (from its config.toml), or None."""
    path = Path(folder) / "config.toml"
    if not path.is_file():
        return None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")).get("cotgen", {}).get("command")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
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
