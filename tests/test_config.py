import dataclasses
import tomllib

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
