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
    [distill]   teacher, temperature, alpha, teacher_prompt: train becomes `cotgen distill train` (logit
                distillation from the teacher in memory); with a [distill.logits] table (LogitsConfig keys) the
                teacher's top-k logits are stored first (`cotgen distill logits` -> OUT/logits) and the student
                trains offline. sft_only = true adds the ablation: `cotgen train` on the same data, steps and
                seed (-> OUT/sft-only, OUT/sft-only-model, OUT/eval-sft-only)
    [export]    format, dtype              -> OUT/sft-model (and OUT/rl-model after rl)
    [rl]        RLConfig keys              -> OUT/rl (policy: OUT/sft-model)
    [eval]      EvalConfig keys shared by  -> OUT/eval-base (model: train.model) and OUT/eval-final (the trained
                [eval.base] / [eval.final] overrides      student: the last exported model)

The ladder: with [rl], the model before it (OUT/sft-model) is evaluated too (OUT/eval-sft, the [eval.final]
overrides), and with the ablation the SFT-only model (OUT/eval-sft-only); these middle rungs are evaluated on
the first eval phase only (the held-out set), the others (e.g. a harder `transfer` split) compare base and final.

Phases: a sub-table of `[generate]`, `[rl]` or `[eval]` whose name is not a key (`[generate.gsm8k]`,
`[generate.math]`) is one phase of that stage: the stage's own keys are shared, the phase's keys override them,
and each phase gets its own folder (OUT/traces/gsm8k, ...). Generate phases are filtered one by one
(OUT/data/gsm8k, with `[filter.gsm8k]` overrides) and their train/validation sets concatenated into OUT/data/all
for `train`; rl phases run in order, each starting from the previous one's model (GSM8K, then MATH); every eval
phase is run for the base and the final model and compared in the report.

Paths the runner owns (`out`, `traces`, `data`, `model` of rl and eval-final) may not be set in the recipe.

Every stage's config is built here, through the same typed checks as `--config` (`cotgen.config.construct`), and
each Stage holds it (`settings`, which the runner writes as the stage's --config file and reads) beside its
TOML-ready values (`config`, which the stage's record keeps): a bad value is one line naming the recipe, the
table and the key before anything runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from cotgen.errors import InputError

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
DISTILL_KEYS = {"teacher", "temperature", "alpha", "teacher_prompt", "sft_only"}
RUN_KEYS = {"out": str, "data_dir": str, "goal_points": float, "name": str, "vllm_python": str}
EXPORT_KEYS = {"format": str, "dtype": str}
EXPORT_DTYPES = ("float32", "bfloat16")
PHASED = ("generate", "filter", "rl", "eval")
KNOWN_TABLES = {"run", "target", "problems", "generate", "filter", "distill", "train", "export", "rl", "eval"}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of a run: `cotgen COMMAND --config <values>` (or an in-process step for problems, merge,
    report), writing `folder`."""

    name: str  # unique, e.g. "generate", "generate.gsm8k", "eval-final.math500"
    command: str  # cotgen subcommand, or "problems" / "merge" / "report" (done in-process)
    folder: Path
    # the stage's values as TOML (paths filled; `to_dict(settings)` where it has a config class): what its
    # record keeps and its identity digests; the in-process steps and export read their values from here
    config: dict[str, Any]
    after: tuple[str, ...] = ()  # stages whose outputs this one reads
    cls: str | None = None  # "module:Class" of the config dataclass, None for commands without one
    phase: str | None = None
    # the config dataclass built (and checked) from the recipe: what the runner writes as --config and reads
    # (backend, mesh, resume), and what the dry-run checks; None for commands without one
    settings: Any = dataclasses.field(default=None, compare=False, repr=False)


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

    def rungs(self) -> list[tuple[str, Stage]]:
        """The ladder on the first eval phase: (label, eval stage) for base, the trained student before rl
        (labelled `distill` or `sft`), after rl, and the SFT-only ablation last; [] without middle rungs."""
        pairs = self.comparisons()
        if not pairs:
            return []
        phase = pairs[0][0].phase
        suffix = f".{phase}" if phase else ""
        names = {s.name: s for s in self.stages}
        trained = "distill" if any(s.command == "distill train" for s in self.stages) else "sft"
        ladder = [("base", names[f"eval-base{suffix}"])]
        if f"eval-sft{suffix}" in names:
            ladder += [(trained, names[f"eval-sft{suffix}"]), ("rl", names[f"eval-final{suffix}"])]
        else:
            ladder.append((trained, names[f"eval-final{suffix}"]))
        if f"eval-sft-only{suffix}" in names:
            ladder.append(("sft-only", names[f"eval-sft-only{suffix}"]))
        return ladder if len(ladder) > 2 else []


def resolve_values(cls_path: str, values: dict[str, Any], path: Path, where: str,
                   tables: dict[str, str] | None = None) -> Any:
    """The stage's config dataclass built from `values` through `--config`'s checks. An error names the recipe
    `path` and the table the key came from (`tables`: key -> table name, e.g. "eval.final"; else `where`, the
    stage's label, e.g. "[eval.gsm8k] (final)")."""
    from cotgen.config import FieldError, config_class, construct

    cls = config_class(cls_path)
    tables = tables or {}
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            table = f"[{tables[key]}]" if key in tables else where
            raise InputError(path, f"{table}: unknown key {key!r} (known: {', '.join(sorted(names))})")
    try:
        return construct(cls, values)
    except FieldError as err:
        table = tables.get(err.key)
        if err.typed:  # its type or range: named as the dotted TOML key
            raise InputError(path, err.message, field=f"{table}.{err.key}" if table else err.key) from None
        raise InputError(path, f"{f'[{table}]' if table else where}: {err.message}") from None


def _tables(*parts: tuple[str, dict]) -> dict[str, str]:
    """key -> the table that set it, later parts overriding earlier ones (as the values merge)."""
    return {key: table for table, values in parts for key in values}


def _stage(name: str, command: str, folder: Path, values: dict, after: tuple[str, ...], phase: str | None,
           path: Path, where: str, tables: dict[str, str]) -> Stage:
    """A stage whose config is one of CONFIGS, built and checked now."""
    from cotgen.config import to_dict

    cls = CONFIGS[command][0]
    cfg = resolve_values(cls, values, path, where, tables)
    return Stage(name, command, folder, to_dict(cfg), after, cls, phase, settings=cfg)


def digest(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read(path: str | Path) -> dict[str, Any]:
    from cotgen.config import read_toml_file

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "recipe file not found")
    doc = read_toml_file(path)  # one line if unreadable, not UTF-8 or not TOML
    unknown = set(doc) - KNOWN_TABLES
    if unknown:
        raise InputError(path, f"unknown table(s) {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(sorted(KNOWN_TABLES))}")
    for required in ("train", "eval"):
        if required not in doc:
            raise InputError(path, f"a recipe needs a [{required}] table")
    for table in KNOWN_TABLES & set(doc):
        if not isinstance(doc[table], dict):
            raise InputError(path, f"{table} must be a table ([{table}]), got {doc[table]!r}")
    return doc


def _check_keys(path: Path, table: str, values: dict[str, Any], types: dict[str, type]) -> None:
    """The keys of a table the runner reads itself ([run], [export]): known, each of its type."""
    from cotgen.config import FieldError, construct

    for key in values:
        if key not in types:
            raise InputError(path, f"unknown key in [{table}] (known: {', '.join(sorted(types))})", field=key)
    spec = dataclasses.make_dataclass(table, [(k, t | None, None) for k, t in types.items()])
    try:
        construct(spec, values)
    except FieldError as err:
        raise InputError(path, err.message, field=f"{table}.{err.key}") from None


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
    _check_keys(path, "run", run, RUN_KEYS)
    name = run.get("name", path.stem)
    root = Path(out or run.get("out") or f"runs/{name}{'-smoke' if smoke else ''}")
    data_dir = Path(run["data_dir"]) if run.get("data_dir") is not None else None  # relative to the cwd
    stages: list[Stage] = []
    common = {"data_dir": str(data_dir)} if data_dir is not None else {}
    run_tables = ("run", common)

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
        problem_files = {split: str(folder / problems.file_name(spec, split)) for split in problems.splits(spec)}

    def with_problems(values: dict, split_default: str) -> dict:
        """Point a stage at the generated problem files unless it names a source itself."""
        if not problem_files or "source" in values:
            return values
        split = values.get("split", split_default)
        if split not in problem_files:
            raise InputError(path, f"[problems] writes {', '.join(problem_files)} splits, not {split!r}"
                             + ("" if "transfer" in problem_files else " (a transfer split needs "
                                "[problems] transfer = {...})"), field="split")
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
            gen = add(_stage(f"generate{suffix}", "generate", traces, values, after_problems, phase, path,
                             f"[generate{suffix}]",
                             _tables(run_tables, ("generate", gen_shared), (f"generate{suffix}", extra))))
            fvalues = {**common, **filt_shared, **filt_phases.get(phase, {})}
            _owned(fvalues, CONFIGS["filter"][1], f"filter{suffix}", path)
            data = root / "data" / (phase or "")
            fvalues.update(traces=str(traces), out=str(data))
            data_stages.append(add(_stage(
                f"filter{suffix}", "filter", data, fvalues, (gen.name,), phase, path, f"[filter{suffix}]",
                _tables(run_tables, ("filter", filt_shared), (f"filter{suffix}", filt_phases.get(phase, {}))))))
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
    train_tables = _tables(("train", tvalues))
    _owned(tvalues, CONFIGS["train"][1] if data_stage else ("out", "resume"), "train", path)
    if data_stage is None and "data" not in doc["train"]:
        raise InputError(path, "[train] has no data: add [generate] (and [filter]) or set train.data")
    if data_stage is not None:
        tvalues["data"] = str(data_stage.folder)
    tvalues["out"] = str(root / "sft")
    student = tvalues.get("model", "gemma-3-270m")
    command, after = "train", (data_stage.name,) if data_stage else ()
    sft_only, ablation = False, {}
    if "distill" in doc:
        distill = dict(doc["distill"])
        logits_table = distill.pop("logits", None)
        for key in distill:
            if key not in DISTILL_KEYS:
                raise InputError(path, "unknown key in [distill] (known: teacher, temperature, alpha, "
                                 "teacher_prompt, sft_only, and a [distill.logits] table)", field=key)
        if "teacher" not in distill:
            raise InputError(path, "[distill] needs teacher = MODEL", field="teacher")
        sft_only = distill.pop("sft_only", False)
        if not isinstance(sft_only, bool):
            raise InputError(path, f"must be true or false, got {sft_only!r}", field="distill.sft_only")
        if sft_only:
            ablation = {k: v for k, v in tvalues.items() if k != "out"}
        command = "distill train"
        if isinstance(logits_table, dict):
            _owned(logits_table, CONFIGS["distill logits"][1], "distill.logits", path)
            if "teacher_prompt" in distill and "teacher_prompt" in logits_table:
                raise InputError(path, "set teacher_prompt in [distill] or in [distill.logits], not both",
                                 field="distill.teacher_prompt")
            moved = {k: distill.pop(k) for k in ("teacher", "teacher_prompt") if k in distill}
            lvalues = {**logits_table, **moved, "data": tvalues["data"], "out": str(root / "logits")}
            tables = _tables(("distill.logits", logits_table), ("distill", moved))
            logits = add(_stage("distill-logits", "distill logits", root / "logits", lvalues, after, None, path,
                                "[distill.logits]", tables))
            distill["logits"] = str(logits.folder)
            after = (logits.name,)
        tvalues.update(distill)
        train_tables.update(_tables(("distill", distill)))
    train = add(_stage("train", command, root / "sft", tvalues, after, None, path, "[train]", train_tables))
    sft_only_train = None
    if sft_only:  # the same data, steps and seed, without the teacher
        ablation["out"] = str(root / "sft-only")
        sft_only_train = add(_stage("train-sft-only", "train", root / "sft-only", ablation,
                                    (data_stage.name,) if data_stage else (), None, path, "[train]",
                                    _tables(("train", ablation))))
    export_values = {"format": "safetensors", "dtype": "float32", **doc.get("export", {})}
    _check_keys(path, "export", export_values, EXPORT_KEYS)
    if export_values["format"] != "safetensors":
        raise InputError(path, "the runner evaluates with vLLM, which reads safetensors: export.format must be "
                         "safetensors", field="format")
    if export_values["dtype"] not in EXPORT_DTYPES:
        raise InputError(path, f"unknown dtype {export_values['dtype']!r}; known: {', '.join(EXPORT_DTYPES)}",
                         field="export.dtype")
    sft_model = add(Stage("export", "export", root / "sft-model", {"ckpt": str(train.folder), **export_values},
                          (train.name,)))
    ablation_model = None
    if sft_only_train is not None:
        ablation_model = add(Stage("export-sft-only", "export", root / "sft-only-model",
                                   {"ckpt": str(sft_only_train.folder), **export_values}, (sft_only_train.name,)))
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
            rl = add(_stage(f"rl{suffix}", "rl", folder, values, (final.name, *after_problems), phase, path,
                            f"[rl{suffix}]", _tables(run_tables, ("rl", rl_shared), (f"rl{suffix}", extra))))
            final = add(Stage(f"rl-export{suffix}", "export", root / "rl-model" / (phase or ""),
                              {"ckpt": str(rl.folder), **export_values}, (rl.name,), None, phase))

    # eval: base and final for every phase ---------------------------------------------------------------------
    ev_shared, ev_phases = _split_phases(doc["eval"], reserved=("base", "final"))
    base_over, final_over = ev_shared.pop("base", {}), ev_shared.pop("final", {})
    for n_phase, (phase, extra) in enumerate((ev_phases or {None: {}}).items()):
        suffix = f".{phase}" if phase else ""
        phase_base, phase_final = extra.pop("base", {}) if extra else {}, extra.pop("final", {}) if extra else {}
        rungs = [("base", student, "base", after_problems),
                 ("final", str(final.folder), "final", (final.name, *after_problems))]
        if n_phase == 0:  # the ladder's middle rungs, asked as the final student is
            if final is not sft_model:
                rungs.append(("sft", str(sft_model.folder), "final", (sft_model.name, *after_problems)))
            if ablation_model is not None:
                rungs.append(("sft-only", str(ablation_model.folder), "final",
                              (ablation_model.name, *after_problems)))
        for who, model, asked, after in rungs:
            over, phase_over = (base_over, phase_base) if asked == "base" else (final_over, phase_final)
            values = with_problems({**common, **ev_shared, **extra, **over, **phase_over}, "test")
            _owned(values, ("model", "out"), f"eval{suffix} ({who})", path)
            folder = root / f"eval-{who}" / (phase or "")
            values.update(model=model, out=str(folder))
            tables = _tables(run_tables, ("eval", ev_shared), (f"eval{suffix}", extra), (f"eval.{asked}", over),
                             (f"eval{suffix}.{asked}", phase_over))
            add(_stage(f"eval-{who}{suffix}", "eval", folder, values, after, phase, path,
                       f"[eval{suffix}] ({who})", tables))
    evals = tuple(s.name for s in stages if s.command == "eval")
    add(Stage("report", "report", root, {"goal_points": run.get("goal_points", 10)}, evals))
    return Plan(path, name, root, data_dir, float(run.get("goal_points", 10)), tuple(stages),
                dict(doc.get("target", {})), doc, tuple(changes) if changes is not None else None)
