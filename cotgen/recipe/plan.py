"""A recipe file -> an ordered list of stages, each with its full `--config` values and its output folder.

Recipe tables (every one optional except `[train]` and `[eval]`):

    [run]       out (default runs/<recipe name>), data_dir, goal_points (the report's target, default 10),
                vllm_python (the interpreter of the stages that sample with vLLM, e.g. a TPU VM's second venv
                holding vllm-tpu, which cannot share one with Tunix; $COTGEN_VLLM_PYTHON overrides it)
    [target]    the hardware `--dry-run` estimates for (see estimate.py)
    [problems]  a generated problem set written to OUT/problems/ (see problems.py); generate, rl and eval then
                read its train/test files unless they name a source themselves
    [generate]  GenerateConfig keys        -> OUT/traces
    [filter]    FilterConfig keys          -> OUT/data
    [train]     TrainConfig keys           -> OUT/sft
    [distill]   teacher, temperature, alpha: train becomes `cotgen distill train` (logit distillation from
                the teacher in memory); with a [distill.logits] table (LogitsConfig keys) the teacher's top-k
                logits are stored first (`cotgen distill logits` -> OUT/logits) and the student trains offline
    [export]    format, dtype              -> OUT/sft-model (and OUT/rl-model after rl)
    [rl]        RLConfig keys              -> OUT/rl (policy: OUT/sft-model)
    [eval]      EvalConfig keys shared by  -> OUT/eval-base (model: train.model) and OUT/eval-final (the trained
                [eval.base] / [eval.final] overrides      student: the last exported model)

Phases: a sub-table of `[generate]`, `[rl]` or `[eval]` whose name is not a key (`[generate.gsm8k]`,
`[generate.math]`) is one phase of that stage: the stage's own keys are shared, the phase's keys override them,
and each phase gets its own folder (OUT/traces/gsm8k, ...). Generate phases are filtered one by one
(OUT/data/gsm8k, with `[filter.gsm8k]` overrides) and their train/validation sets concatenated into OUT/data/all
for `train`; rl phases run in order, each starting from the previous one's model (GSM8K, then MATH); every eval
phase is run for the base and the final model and compared in the report.

Paths the runner owns (`out`, `traces`, `data`, `model` of rl and eval-final) may not be set in the recipe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

from cotgen.errors import CotgenError, InputError

# stage table -> (config class import path, keys the runner fills)
CONFIGS = {
    "generate": ("cotgen.generate.config:GenerateConfig", ("out",)),
    "filter": ("cotgen.filter.config:FilterConfig", ("traces", "out", "overwrite")),
    "train": ("cotgen.train.config:TrainConfig", ("data", "out", "resume")),  # data: when [generate] exists
    "rl": ("cotgen.train.rl_config:RLConfig", ("out", "resume")),
    "eval": ("cotgen.eval.config:EvalConfig", ("out",)),
    "distill train": ("cotgen.distill.config:DistillConfig", ("data", "out", "resume", "logits")),
    "distill logits": ("cotgen.distill.config:LogitsConfig", ("data", "out")),
}
DISTILL_KEYS = {"teacher", "temperature", "alpha"}
RUN_KEYS = {"out", "data_dir", "goal_points", "name", "vllm_python"}
EXPORT_KEYS = {"format", "dtype"}
PHASED = ("generate", "filter", "rl", "eval")
KNOWN_TABLES = {"run", "target", "problems", "generate", "filter", "distill", "train", "export", "rl", "eval"}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of a run: `cotgen COMMAND --config <values>` (or an in-process step for problems, merge,
    report), writing `folder`."""

    name: str  # unique, e.g. "generate", "generate.gsm8k", "eval-final.math500"
    command: str  # cotgen subcommand, or "problems" / "merge" / "report" (done in-process)
    folder: Path
    config: dict[str, Any]  # the stage's --config values (paths filled), without resume/overwrite flags
    after: tuple[str, ...] = ()  # stages whose outputs this one reads
    cls: str | None = None  # "module:Class" of the config dataclass, None for commands without one
    phase: str | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
    recipe: Path
    name: str
    out: Path
    data_dir: Path | None
    goal_points: float
    stages: tuple[Stage, ...]
    target: dict[str, Any]
    raw: dict[str, Any]
    smoke: tuple[str, ...] | None = None  # `--smoke`: what was changed (cotgen.recipe.smoke); None: a real run

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def comparisons(self) -> list[tuple[Stage, Stage]]:
        """(eval-base, eval-final) pairs, one per eval phase."""
        finals = {s.phase: s for s in self.stages if s.command == "eval" and s.name.startswith("eval-final")}
        return [(s, finals[s.phase]) for s in self.stages
                if s.command == "eval" and s.name.startswith("eval-base") and s.phase in finals]


def config_class(path: str):
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def resolve_values(cls_path: str, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Construct the stage's config dataclass from `values` (the same checks as `--config`), return every field
    as TOML-ready values (defaults included)."""
    from cotgen.config import to_dict

    cls = config_class(cls_path)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            raise CotgenError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(names))})")
    import typing

    hints = typing.get_type_hints(cls)
    fixed = {k: tuple(v) if isinstance(v, list) and "tuple" in str(hints.get(k, "")) else v
             for k, v in values.items()}
    try:
        cfg = cls(**fixed)
    except CotgenError as err:
        raise CotgenError(f"{where}: {err}") from None
    except TypeError as err:
        raise CotgenError(f"{where}: {err}") from None
    return to_dict(cfg)


def digest(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "recipe file not found")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise InputError(path, f"not valid TOML: {err}") from None
    unknown = set(doc) - KNOWN_TABLES
    if unknown:
        raise InputError(path, f"unknown table(s) {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(sorted(KNOWN_TABLES))}")
    for required in ("train", "eval"):
        if required not in doc:
            raise InputError(path, f"a recipe needs a [{required}] table")
    return doc


def _split_phases(table: dict[str, Any], reserved: tuple[str, ...] = ()) -> tuple[dict, dict[str, dict]]:
    """(shared keys, {phase: keys}) of a stage table; sub-tables are phases except `reserved` ones."""
    shared = {k: v for k, v in table.items() if not isinstance(v, dict) or k in reserved}
    phases = {k: v for k, v in table.items() if isinstance(v, dict) and k not in reserved}
    return shared, phases


def _owned(values: dict, owned: tuple[str, ...], where: str, path: Path) -> None:
    for key in owned:
        if key in values:
            raise InputError(path, f"[{where}] sets {key!r}, which the runner fills (one run folder holds "
                             "every stage); remove it", field=key)


def build(recipe: str | Path, *, out: str | Path | None = None, smoke: bool = False) -> Plan:
    """Parse and wire a recipe; every stage config is constructed (validated) here. `smoke`: the recipe as
    `cotgen.recipe.smoke` rewrites it (tiny models, a few problems, the same stage graph)."""
    path = Path(recipe)
    doc = read(path)
    changes = None
    if smoke:
        from cotgen.recipe import smoke as smoke_mod

        doc, changes = smoke_mod.transform(doc)
    run = doc.get("run", {})
    for key in run:
        if key not in RUN_KEYS:
            raise InputError(path, f"unknown key in [run] (known: {', '.join(sorted(RUN_KEYS))})", field=key)
    name = run.get("name", path.stem)
    root = Path(out or run.get("out") or f"runs/{name}{'-smoke' if smoke else ''}")
    data_dir = Path(run["data_dir"]) if run.get("data_dir") is not None else None  # relative to the cwd
    stages: list[Stage] = []
    common = {"data_dir": str(data_dir)} if data_dir is not None else {}

    def add(stage: Stage) -> Stage:
        stages.append(stage)
        return stage

    # problems -------------------------------------------------------------------------------------------
    problem_files: dict[str, str] = {}
    if "problems" in doc:
        from cotgen.recipe import problems

        spec = problems.check(doc["problems"], path)
        folder = root / "problems"
        add(Stage("problems", "problems", folder, spec))
        problem_files = {split: str(folder / problems.file_name(spec, split)) for split in ("train", "test")}

    def with_problems(values: dict, split_default: str) -> dict:
        """Point a stage at the generated problem files unless it names a source itself."""
        if not problem_files or "source" in values:
            return values
        split = values.get("split", split_default)
        if split not in problem_files:
            raise InputError(path, f"[problems] writes train and test splits, not {split!r}", field="split")
        return {**values, "source": problem_files[split], "split": split}

    after_problems = ("problems",) if problem_files else ()

    # generate and filter --------------------------------------------------------------------------------
    data_stages: list[Stage] = []
    if "generate" in doc:
        gen_shared, gen_phases = _split_phases(doc["generate"])
        filt_shared, filt_phases = _split_phases(doc.get("filter", {}))
        unknown = set(filt_phases) - set(gen_phases)
        if unknown:
            raise InputError(path, f"[filter.{min(unknown)}] has no [generate.{min(unknown)}] phase")
        for phase, extra in (gen_phases or {None: {}}).items():
            suffix = f".{phase}" if phase else ""
            values = with_problems({**common, **gen_shared, **extra}, "train")
            _owned(values, CONFIGS["generate"][1], f"generate{suffix}", path)
            traces = root / "traces" / (phase or "")
            values["out"] = str(traces)
            gen = add(Stage(f"generate{suffix}", "generate", traces,
                            resolve_values(CONFIGS["generate"][0], values, f"[generate{suffix}]"),
                            after_problems, CONFIGS["generate"][0], phase))
            fvalues = {**common, **filt_shared, **filt_phases.get(phase, {})}
            _owned(fvalues, CONFIGS["filter"][1], f"filter{suffix}", path)
            data = root / "data" / (phase or "")
            fvalues.update(traces=str(traces), out=str(data))
            data_stages.append(add(Stage(f"filter{suffix}", "filter", data,
                                         resolve_values(CONFIGS["filter"][0], fvalues, f"[filter{suffix}]"),
                                         (gen.name,), CONFIGS["filter"][0], phase)))
    elif "filter" in doc:
        raise InputError(path, "[filter] needs a [generate] table (the traces it filters)")

    if len(data_stages) > 1:
        merged = root / "data" / "all"
        data_stage = add(Stage("merge", "merge", merged, {"inputs": [str(s.folder) for s in data_stages]},
                               tuple(s.name for s in data_stages)))
    else:
        data_stage = data_stages[0] if data_stages else None

    # train (or distill train) and export ---------------------------------------------------------------------
    tvalues = dict(doc["train"])
    _owned(tvalues, CONFIGS["train"][1] if data_stage else ("out", "resume"), "train", path)
    if data_stage is None and "data" not in doc["train"]:
        raise InputError(path, "[train] has no data: add [generate] (and [filter]) or set train.data")
    if data_stage is not None:
        tvalues["data"] = str(data_stage.folder)
    tvalues["out"] = str(root / "sft")
    student = tvalues.get("model", "gemma-3-270m")
    command, after = "train", (data_stage.name,) if data_stage else ()
    if "distill" in doc:
        distill = dict(doc["distill"])
        logits_table = distill.pop("logits", None)
        for key in distill:
            if key not in DISTILL_KEYS:
                raise InputError(path, "unknown key in [distill] (known: teacher, temperature, alpha, and a "
                                 "[distill.logits] table)", field=key)
        if "teacher" not in distill:
            raise InputError(path, "[distill] needs teacher = MODEL", field="teacher")
        command = "distill train"
        if isinstance(logits_table, dict):
            _owned(logits_table, CONFIGS["distill logits"][1], "distill.logits", path)
            lvalues = {**logits_table, "teacher": distill.pop("teacher"), "data": tvalues["data"],
                       "out": str(root / "logits")}
            logits = add(Stage("distill-logits", "distill logits", root / "logits",
                               resolve_values(CONFIGS["distill logits"][0], lvalues, "[distill.logits]"), after,
                               CONFIGS["distill logits"][0]))
            distill["logits"] = str(logits.folder)
            after = (logits.name,)
        tvalues.update(distill)
    cls = CONFIGS[command][0]
    train = add(Stage("train", command, root / "sft", resolve_values(cls, tvalues, "[train]"), after, cls))
    export_values = {"format": "safetensors", "dtype": "float32", **doc.get("export", {})}
    for key in export_values:
        if key not in EXPORT_KEYS:
            raise InputError(path, f"unknown key in [export] (known: {', '.join(sorted(EXPORT_KEYS))})", field=key)
    if export_values["format"] != "safetensors":
        raise InputError(path, "the runner evaluates with vLLM, which reads safetensors: export.format must be "
                         "safetensors", field="format")
    sft_model = add(Stage("export", "export", root / "sft-model", {"ckpt": str(train.folder), **export_values},
                          (train.name,)))
    final = sft_model

    # rl phases, in order ----------------------------------------------------------------------------------
    if "rl" in doc:
        rl_shared, rl_phases = _split_phases(doc["rl"])
        for phase, extra in (rl_phases or {None: {}}).items():
            suffix = f".{phase}" if phase else ""
            values = with_problems({**common, **rl_shared, **extra}, "train")
            _owned(values, ("model", *CONFIGS["rl"][1]), f"rl{suffix}", path)
            folder = root / "rl" / (phase or "")
            values.update(model=str(final.folder), out=str(folder))
            rl = add(Stage(f"rl{suffix}", "rl", folder, resolve_values(CONFIGS["rl"][0], values, f"[rl{suffix}]"),
                           (final.name, *after_problems), CONFIGS["rl"][0], phase))
            final = add(Stage(f"rl-export{suffix}", "export", root / "rl-model" / (phase or ""),
                              {"ckpt": str(rl.folder), **export_values}, (rl.name,), None, phase))

    # eval: base and final for every phase ---------------------------------------------------------------------
    ev_shared, ev_phases = _split_phases(doc["eval"], reserved=("base", "final"))
    base_over, final_over = ev_shared.pop("base", {}), ev_shared.pop("final", {})
    for phase, extra in (ev_phases or {None: {}}).items():
        suffix = f".{phase}" if phase else ""
        phase_base, phase_final = extra.pop("base", {}) if extra else {}, extra.pop("final", {}) if extra else {}
        for who, model, over, after in (("base", student, {**base_over, **phase_base}, after_problems),
                                        ("final", str(final.folder), {**final_over, **phase_final},
                                         (final.name, *after_problems))):
            values = with_problems({**common, **ev_shared, **extra, **over}, "test")
            _owned(values, ("model", "out"), f"eval{suffix} ({who})", path)
            folder = root / f"eval-{who}" / (phase or "")
            values.update(model=model, out=str(folder))
            add(Stage(f"eval-{who}{suffix}", "eval", folder,
                      resolve_values(CONFIGS["eval"][0], values, f"[eval{suffix}] ({who})"), after,
                      CONFIGS["eval"][0], phase))
    evals = tuple(s.name for s in stages if s.command == "eval")
    add(Stage("report", "report", root, {"goal_points": run.get("goal_points", 10)}, evals))
    return Plan(path, name, root, data_dir, float(run.get("goal_points", 10)), tuple(stages),
                dict(doc.get("target", {})), doc, tuple(changes) if changes is not None else None)
