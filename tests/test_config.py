import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Literal

import pytest

from cotgen import config
from cotgen.errors import InputError


@dataclasses.dataclass(frozen=True)
class Cfg:
    model: str = "gemma-3-270m"
    n: int = 4
    temperature: float = 0.8
    stop: tuple[str, ...] = ()
    out: str | None = None


def test_precedence_defaults_then_file_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('n = 8\ntemperature = 0.5\nstop = ["a", "b"]\n')
    cfg = config.resolve(Cfg, path, {"temperature": 1.0, "model": None})
    assert cfg == Cfg(model="gemma-3-270m", n=8, temperature=1.0, stop=("a", "b"))


def test_section_of_a_recipe(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text("[generate]\nn = 2\n[train]\nsteps = 5\n")
    assert config.resolve(Cfg, path, section="generate").n == 2


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("nn = 8\n")
    with pytest.raises(InputError, match=r"run.toml: field 'nn': unknown key"):
        config.resolve(Cfg, path)


def test_bad_toml_and_missing_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("n = \n")
    with pytest.raises(InputError, match="not valid TOML"):
        config.resolve(Cfg, path)
    with pytest.raises(InputError, match="not found"):
        config.resolve(Cfg, tmp_path / "absent.toml")


def test_written_config_resolves_to_the_same(tmp_path):
    cfg = Cfg(n=3, stop=("x",), out=str(tmp_path))
    written = config.write_resolved(cfg, tmp_path, "generate")
    doc = tomllib.loads(written.read_text())
    assert doc["cotgen"]["command"] == "generate"
    assert config.resolve(Cfg, written) == cfg
    assert not list(tmp_path.glob(".*.tmp"))


@dataclasses.dataclass(frozen=True)
class Typed:
    path: Path = Path("x")
    mode: Literal["a", "b"] = "a"
    size: tuple[int, int] = (1, 2)
    timeout_s: float = 1.0
    workers: int = 0


@pytest.mark.parametrize("values, key, expected", [
    ({"n": "4"}, "n", "expected an integer, got '4' (a string)"),
    ({"n": True}, "n", "expected an integer, got True (a boolean)"),
    ({"n": 4.0}, "n", "expected an integer, got 4.0"),
    ({"temperature": float("nan")}, "temperature", "expected a finite number, got nan"),
    ({"temperature": "0.5"}, "temperature", "expected a finite number"),
    ({"stop": ["a", 1]}, "stop", "expected a list of strings"),
    ({"stop": "a"}, "stop", "expected a list of strings, got 'a' (a string)"),
    ({"out": 3}, "out", "expected a string, got 3"),
])
def test_values_are_checked_against_field_types(values, key, expected):
    with pytest.raises(config.FieldError) as err:
        config.construct(Cfg, values)
    assert (err.value.key, err.value.typed) == (key, True) and err.value.message.startswith(expected)


def test_conversions_literals_and_shared_ranges():
    cfg = config.construct(Typed, {"path": "a/b", "mode": "b", "size": [3, 4], "timeout_s": 2, "workers": 8})
    assert cfg == Typed(Path("a/b"), "b", (3, 4), 2, 8)
    assert config.construct(Cfg, {"temperature": 1}).temperature == 1  # an int is a number
    for values, expected in (({"mode": "c"}, "one of 'a', 'b'"), ({"size": [1]}, "a list of 2 values"),
                             ({"timeout_s": 0}, "a finite number of seconds > 0"),
                             ({"timeout_s": float("inf")}, "a finite number of seconds > 0"),
                             ({"workers": config.MAX_WORKERS + 1}, f"an integer in [0, {config.MAX_WORKERS}]")):
        with pytest.raises(config.FieldError, match=re.escape(expected)):
            config.construct(Typed, values)


def test_file_and_flag_errors_name_their_source(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('n = "8"\n')
    with pytest.raises(InputError, match=r"run.toml: field 'n': expected an integer, got '8' \(a string\)$"):
        config.resolve(Cfg, path)
    assert config.resolve(Cfg, path, {"n": 3}).n == 3  # the flag replaces the file's value
    with pytest.raises(InputError, match=r"^command line: field '--temperature': expected a finite number"):
        config.resolve(Cfg, None, {"temperature": float("inf")})
    path.write_bytes(b"n = 8\nmodel = '\xe9'\n")
    with pytest.raises(InputError, match=r"run.toml:2: not UTF-8"):
        config.resolve(Cfg, path)
