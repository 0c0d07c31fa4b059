"""`cotgen run RECIPE --smoke`: the recipe's own stage graph, cut to minutes on a CPU.

The recipe is rewritten before the plan is built, so every stage is validated and run by the same code a real
run uses (the same commands, phases, backends, options, meshes, rl and export stages, report). What changes,
and why:

- every model (teacher, student, distillation teacher) becomes the tiny random model of its family (`tiny` for
  Gemma 3, `tiny-gemma2` for Gemma 2), loaded by Tunix, and by vLLM as a Hugging Face folder
  (`cotgen.models.tiny.hf_folder`); the prompt style the real model would get (chat for instruction-tuned
  teachers and students) is written down, since a tiny model alone would count as a base model;
- sources are cut to `PROBLEMS` problems, completions to `MAX_TOKENS` tokens, train and rl to `STEPS` steps,
  rows to `MAX_LEN` tokens, checkpoints and evaluations to every step;
- vLLM's tensor and data parallelism become 1: vLLM on a CPU runs one engine in one process (JAX meshes are
  kept: the runner gives each stage `--xla_force_host_platform_device_count` = the target's devices, so
  `fsdp=8` really shards over 8 host devices);
- `filter` sets `reference_fallback`: a random teacher verifies nothing, so problems train on their source's
  worked solution instead (the filter still scores every trace).

The rewritten recipe, and the list of changes, are in OUT/recipe/smoke.json.
"""

from __future__ import annotations

import copy
from typing import Any

PROBLEMS = 4
MAX_TOKENS = 16
STEPS = 2
MAX_LEN = 512
MAX_MODEL_LEN = 2048
SUFFIX = "-smoke"


def tiny_for(spec: str) -> str:
    """The tiny random model of `spec`'s family (told by its name where the model is not on this machine, e.g. a
    Kaggle input path)."""
    from cotgen.models import known_family
    from cotgen.models.families import from_name

    fam = known_family(spec) or getattr(from_name(spec), "name", "gemma3")
    return "tiny-gemma2" if fam == "gemma2" else "tiny"


def _style(spec: str, command: str) -> str:
    """The prompt style a stage would pick for the real `spec` (generate/eval: chat | few_shot; rl: chat | plain)."""
    from cotgen.models import is_base_model

    if not is_base_model(spec):
        return "chat"
    return "plain" if command == "rl" else "few_shot"


def _tables(table: dict[str, Any]) -> list[dict[str, Any]]:
    """The table and every sub-table in it (phases, and override tables such as eval.base)."""
    found = [table]
    for value in table.values():
        if isinstance(value, dict):
            found += _tables(value)
    return found


def _cap(t: dict, key: str, value: int, changes: list[str], where: str, default: int | None = None) -> None:
    current = t.get(key, default)
    if current is None or current > value:
        t[key] = value
        changes.append(f"[{where}] {key} = {value}" + (f" (was {current})" if current is not None else ""))


def _one_engine(t: dict, changes: list[str], where: str) -> None:
    for key in ("tensor_parallel_size", "data_parallel_size"):
        if t.get(key, 1) != 1:
            changes.append(f"[{where}] {key} = 1 (was {t[key]}: one vLLM engine on a CPU)")
            t[key] = 1
    if t.get("max_model_len", 0) > MAX_MODEL_LEN:
        _cap(t, "max_model_len", MAX_MODEL_LEN, changes, where)


def transform(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the smoke recipe, what was changed). `doc` is a parsed recipe; it is not modified."""
    doc = copy.deepcopy(doc)
    changes: list[str] = []
    run = doc.setdefault("run", {})
    if "out" in run:
        run["out"] = str(run["out"]).rstrip("/") + SUFFIX
    student = doc["train"].get("model", "gemma-3-270m")

    def swap(t: dict, key: str, where: str) -> None:
        if key in t:
            tiny = tiny_for(t[key])
            changes.append(f"[{where}] {key} = {tiny!r} (was {t[key]!r})")
            t[key] = tiny

    gen = doc.get("generate")
    if gen is not None:
        gen.setdefault("teacher", "gemma-3-270m")
        for t in _tables(gen):
            if "teacher" in t:
                t.setdefault("prompt_style", _style(t["teacher"], "generate"))
                swap(t, "teacher", "generate")
            if "limit" in t or t is gen:
                _cap(t, "limit", PROBLEMS, changes, "generate")
            if "max_tokens" in t or t is gen:
                _cap(t, "max_tokens", MAX_TOKENS, changes, "generate", default=512)
            _one_engine(t, changes, "generate")
        if not gen.get("enforce_eager", False):
            gen["enforce_eager"] = True
            changes.append("[generate] enforce_eager = true (a few tokens: torch.compile would take longer "
                           "than the sampling)")
        doc.setdefault("filter", {})["reference_fallback"] = True
        changes.append("[filter] reference_fallback = true (a random teacher verifies nothing)")

    distill = doc.get("distill")
    if distill is not None:
        swap(distill, "teacher", "distill")
        if isinstance(distill.get("logits"), dict):
            swap(distill["logits"], "teacher", "distill.logits")

    train = doc["train"]
    train.setdefault("model", student)
    swap(train, "model", "train")
    train.pop("epochs", None)
    train["steps"] = STEPS
    changes.append(f"[train] steps = {STEPS} (epochs dropped)")
    _cap(train, "max_len", MAX_LEN, changes, "train", default=1024)
    for key in ("save_every", "eval_every"):
        train[key] = 1
    train["eval_batches"] = 1

    rl = doc.get("rl")
    if rl is not None:
        for t in _tables(rl):
            if "steps" in t or t is rl:
                t["steps"] = STEPS
            if "limit" in t or t is rl:
                _cap(t, "limit", 16, changes, "rl")
            if "max_tokens" in t or t is rl:
                _cap(t, "max_tokens", MAX_TOKENS, changes, "rl", default=256)
            for key, value in (("save_every", 1), ("eval_every", 1), ("eval_size", 2)):
                if key in t or t is rl:
                    t[key] = value
            if "eval_max_tokens" in t:
                t["eval_max_tokens"] = MAX_TOKENS
        changes.append(f"[rl] steps = {STEPS}, eval_size = 2, save_every = eval_every = 1")

    ev = doc["eval"]
    base = ev.setdefault("base", {})
    base.setdefault("prompt_style", _style(student, "eval"))
    for t in _tables(ev):
        if "limit" in t or t is ev:
            _cap(t, "limit", PROBLEMS, changes, "eval")
        if "max_tokens" in t or t is ev:
            _cap(t, "max_tokens", MAX_TOKENS, changes, "eval", default=512)
        _one_engine(t, changes, "eval")
    return doc, changes


def host_devices(target: dict[str, Any]) -> int:
    """How many host devices the smoke run's JAX stages see: the target's device count."""
    from cotgen.recipe import estimate

    return int(estimate.profile(target)["devices"])
