"""The import graph has layers: shared services sit below the stages, and no import climbs back up.

Every `from cotgen... import` and `import cotgen...` in cotgen/, at module level or inside a function, is checked
against the ranks below: a module imports only from its own rank or lower, and a stage never imports another
stage (distill is built on train's data pipeline and fit loop, the one declared exception).
"""

from __future__ import annotations

import ast
from pathlib import Path

import cotgen

ROOT = Path(cotgen.__file__).parent
RANK = {
    "": 0, "errors": 0, "io": 0, "progress": 0, "schemas": 0, "config": 0,  # base
    "prompts": 1,
    "models": 2,
    "verify": 3,
    "sources": 4, "engines": 4, "runs": 4,  # shared services
    "generate": 5, "filter": 5, "train": 5, "eval": 5, "distill": 5,  # stages
    "recipe": 6, "cli": 6,  # what runs the stages
}
STAGES = {"generate", "filter", "train", "eval", "distill"}
ALLOWED = {("distill", "train")}


def _unit(module: str) -> str:
    """cotgen.eval.engine -> eval; cotgen -> ''; cotgen.io -> io."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _edges(root: Path = ROOT):
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        src = rel.parts[0] if len(rel.parts) > 1 else ("" if rel.name == "__init__" else rel.name)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cotgen":
                targets = [node.module] if "." in node.module else [f"cotgen.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "cotgen"]
            else:
                continue
            for target in targets:
                dst = _unit(target)
                if dst in RANK and dst != src:
                    yield src, dst, f"{path.relative_to(root.parent)}:{node.lineno}"


def test_every_unit_has_a_rank():
    units = {p.name if p.is_dir() else p.stem for p in ROOT.iterdir()
             if (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert units <= set(RANK), f"give these a rank: {sorted(units - set(RANK))}"


def test_no_import_climbs_back_up():
    climbs = [f"{where}: {src or 'cotgen'} -> {dst}" for src, dst, where in _edges()
              if RANK[dst] > RANK[src] or (src in STAGES and dst in STAGES and (src, dst) not in ALLOWED)]
    assert not climbs, "imports that climb back up:\n" + "\n".join(climbs)


def test_the_checker_sees_function_level_imports(tmp_path):
    """The walk sees imports inside functions (where the lazy, climbing ones used to hide)."""
    models = tmp_path / "cotgen" / "models"
    models.mkdir(parents=True)
    (models / "load.py").write_text("import os\n\n\ndef f():\n    from cotgen.train import export\n")
    assert list(_edges(tmp_path / "cotgen")) == [("models", "train", "cotgen/models/load.py:5")]
