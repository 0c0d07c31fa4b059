"""`cotgen run RECIPE --dry-run`: validate a whole recipe here, without loading any model weights.

Checked, in order, each a line marked ok / warn / FAIL:
1. every stage's configuration resolves (the stage's own dataclass checks; done when the plan is built) and what
   a run would do now with each stage (run, skip, resume, or refuse);
2. the data: every problem source loads (the generated `[problems]` sets are built in memory);
3. prompt lengths, tokenized with the embedded 270M's tokenizer (the same vocabulary as every Gemma 3): teacher
   prompts + max_tokens within vLLM's max_model_len, student prompts within rl's max_prompt_tokens (longer ones
   are dropped), prompt + the longest completion within train's max_len (longer ones are cut);
4. model shapes from Tunix's presets (`ModelConfig.gemma3_1b_it()`, ...), parameters counted through
   `nnx.eval_shape` (no weights allocated);
5. meshes against the target's device count: train/rl fsdp x tp, vLLM tensor x data parallel, heads divisible by
   the tensor-parallel size, batches by fsdp;
6. per-stage time and memory ESTIMATES for the `[target]` (estimate.py states every assumption), the stored
   top-k logits' size (against `[target] disk_gib` where given), and the total against `[target] budget_hours`.
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path
from typing import Any

from cotgen.errors import CotgenError
from cotgen.recipe import estimate
from cotgen.recipe.plan import Plan

SAMPLE = 400  # prompts tokenized per stage
GIB = 1 << 30


class Report:
    def __init__(self):
        self.lines: list[str] = []
        self.failures = 0
        self.warnings = 0

    def check(self, ok: bool | None, text: str) -> None:
        """ok True: ok; None: warning; False: failure."""
        mark = "ok  " if ok else ("warn" if ok is None else "FAIL")
        self.failures += ok is False
        self.warnings += ok is None
        self.lines.append(f"  [{mark}] {text}")

    def section(self, title: str) -> None:
        self.lines += ["", f"## {title}"]

    def say(self, text: str) -> None:
        self.lines.append(text)


# ---------------------------------------------------------------------------------------------------- models
_SIZE_RE = re.compile(r"gemma-(3|2)-(270m|1b|2b|4b|9b|12b|27b)(?:-(it|pt))?", re.IGNORECASE)
_LAYERS = {("gemma3", 18): "gemma3_270m", ("gemma3", 26): "gemma3_1b_it", ("gemma3", 34): "gemma3_4b_it",
           ("gemma3", 48): "gemma3_12b_it", ("gemma3", 62): "gemma3_27b_it", ("gemma2", 26): "gemma2_2b_it",
           ("gemma2", 42): "gemma2_9b_it"}


def preset_for(spec: str, plan: Plan) -> str | None:
    """The Tunix preset of a model spec, or None (tiny models; run-internal folders map to the student's)."""
    if spec == "gemma-3-270m":
        return "gemma3_270m"
    if spec.startswith("orbax:"):
        return spec.split(":")[1]
    if spec.startswith("tiny"):
        return None
    if Path(spec).is_relative_to(plan.out):  # a model this run makes: the student's shape
        return preset_for(plan.stage("train").settings.model, plan)
    m = _SIZE_RE.search(spec)
    if m:
        version, size, kind = m.group(1), m.group(2).lower(), (m.group(3) or "pt").lower()
        if version == "2":
            return f"gemma2_{size}" + ("_it" if kind == "it" else "")
        return "gemma3_270m" if size == "270m" else f"gemma3_{size}_{kind}"
    config = Path(spec) / "config.json"
    if config.is_file():
        import json

        hf = json.loads(config.read_text())
        family = "gemma2" if hf.get("model_type") == "gemma2" else "gemma3"
        return _LAYERS.get((family, hf.get("text_config", hf).get("num_hidden_layers")))
    return None


def preset_family(preset: str) -> str:
    from cotgen.models.families import preset_family as family_of

    return getattr(family_of(preset), "name", "gemma3")


_SHAPES: dict[str, dict] = {}


def shape(preset: str) -> dict[str, Any]:
    """Parameter count and dimensions of a Tunix Gemma 3 or Gemma 2 preset, from abstract arrays only."""
    if preset in _SHAPES:
        return _SHAPES[preset]
    import jax
    import numpy as np
    from flax import nnx

    from cotgen.models.load import tunix_family

    tunix = tunix_family(preset_family(preset))
    if preset.startswith("_") or preset not in tunix.presets():
        raise CotgenError(f"Tunix has no preset {preset!r}; known: {', '.join(tunix.presets())}")
    model_cls = tunix.model_class()
    cfg = tunix.preset(preset)
    abstract = nnx.eval_shape(lambda: model_cls(cfg, rngs=nnx.Rngs(0)))
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    _SHAPES[preset] = {"preset": preset, "family": preset_family(preset), "params": params,
                       "num_layers": cfg.num_layers, "embed_dim": cfg.embed_dim, "num_heads": cfg.num_heads,
                       "num_kv_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim, "num_embed": cfg.num_embed}
    return _SHAPES[preset]


# ---------------------------------------------------------------------------------------------------- data
def _tokenizer():
    from tokenizers import Tokenizer

    from cotgen.models.prepare import prepare

    return Tokenizer.from_file(str(prepare("gemma-3-270m") / "tokenizer.json"))


def _lengths(tok, texts: list[str]) -> list[int]:
    return [len(e.ids) for e in tok.encode_batch(texts[:SAMPLE])]


def _stats(lengths: list[int]) -> str:
    if not lengths:
        return "none"
    q = statistics.quantiles(lengths, n=20) if len(lengths) > 1 else [lengths[0]] * 19
    return f"median {statistics.median(lengths):.0f}, p95 {q[18]:.0f}, max {max(lengths)} tokens"


class Problems:
    """Problem sets by (source, split, limit, seed), built once; `[problems]` files come from memory."""

    def __init__(self, plan: Plan):
        self.plan, self.cache = plan, {}
        self.generated: dict[str, list[dict]] = {}
        if any(s.command == "problems" for s in plan.stages):
            from cotgen.recipe import problems

            stage = plan.stage("problems")
            sets = problems.build(stage.config)
            for split, rows in sets.items():
                self.generated[str(stage.folder / problems.file_name(stage.config, split))] = rows

    def load(self, source: str, split: str, limit: int | None, seed: int, data_dir):
        import polars as pl

        key = (source, split, limit, seed, str(data_dir))
        if key not in self.cache:
            if source in self.generated:
                rows = self.generated[source][:limit] if limit else self.generated[source]
                self.cache[key] = pl.DataFrame(rows, schema={"question": pl.String, "answer": pl.String})
            else:
                from cotgen.sources import load_problems

                self.cache[key] = load_problems(source, split, data_dir=data_dir, limit=limit, seed=seed)
        return self.cache[key]


# ---------------------------------------------------------------------------------------------------- checks
def model_family(spec: str, plan: Plan) -> str | None:
    """"gemma2" | "gemma3" from a spec alone (its Tunix preset, else its name or tiny preset), None if unknown."""
    preset = preset_for(spec, plan)
    if preset:
        return preset_family(preset)
    from cotgen.models import known_family

    return known_family(spec)


def check_teacher_vocab(r: Report, plan: Plan) -> None:
    """A [distill] teacher must score the student's tokens: one family's vocabulary (Gemma 2: 256,000 rows,
    Gemma 3: 262,144; HF's Gemma 3 4B+ carry 64 image rows more, which cotgen drops). The teacher is the logits
    stage's (offline) or the train stage's (online)."""
    train = plan.stage("train")
    if train.command != "distill train":
        return
    stage = next((x for x in plan.stages if x.command == "distill logits"), train)
    teacher, student = stage.settings.teacher or "", train.settings.model
    t, s = model_family(teacher, plan) if teacher else None, model_family(student, plan)
    if t is None or s is None:
        r.check(None, f"distill.teacher {teacher}: vocabulary not checked (family unknown from the spec)")
        return
    r.check(t == s, f"distill.teacher {teacher} ({t}) and train.model {student} ({s})"
            + (": one vocabulary" if t == s else f": the teacher cannot score the student's tokens (logit "
               "distillation needs one vocabulary; Gemma 2: 256,000 rows, Gemma 3: 262,144); pick a teacher of "
               f"the {s} family or drop [distill]"))


def _mesh(c) -> tuple[int, int]:
    """(fsdp, tp) of a train, distill train or rl config."""
    from cotgen.train.config import parse_mesh

    m = parse_mesh(c.mesh) if c.mesh else {"fsdp": 1, "tp": 1}
    return m["fsdp"], m["tp"]


def rl_memory_split(r, name: str, c, sh: dict, p: dict, prompt_tokens: int) -> None:
    """One GPU shared by JAX (actor, reference, optimizer, activations: estimate.training_memory) and cotgen's
    vLLM rollout engine (bf16 weights + a KV cache for every completion of a step at full length, twice over):
    the split `cotgen rl` sets (vLLM `rollout_gpu_share`, XLA 0.95 minus it) must hold both."""
    from cotgen.train import vllm_rollout

    seqs, length = vllm_rollout.engine_size(
        batch_size=c.batch_size, num_generations=c.num_generations, eval_size=c.eval_size,
        prompt_tokens=prompt_tokens, max_tokens=max(c.max_tokens, c.eval_max_tokens or c.max_tokens))
    kv = 2 * seqs * length * estimate.kv_bytes_per_token(sh)
    weights = sh["params"] * 2
    total = int(p["memory_gib"] * GIB)
    jax_bytes = estimate.training_memory(sh, lora=c.lora_rank > 0, rows_per_device=c.batch_size * c.num_generations,
                                         max_len=length, param_bytes=4 if c.dtype == "float32" else 2, fsdp=1,
                                         reference=c.lora_rank == 0)
    share = c.rollout_gpu_share
    try:
        vllm_rollout.check_gpu_fit(total, share, weight_bytes=weights, kv_bytes=kv)
        ok = jax_bytes <= (0.95 - share) * total
        detail = (f"vLLM {share:.2f} of {p['memory_gib']:.0f} GiB for {(weights + kv) * 1.1 / GIB:.1f} GiB "
                  f"(bf16 weights {weights / GIB:.1f} + KV cache {kv / GIB:.1f} for {seqs} x {length} tokens, +10%); "
                  f"XLA {0.95 - share:.2f} for {jax_bytes / GIB:.1f} GiB (ESTIMATED)")
        if not ok:
            detail += ": JAX's share is too small, lower rollout_gpu_share"
    except CotgenError as e:
        ok, detail = False, str(e)
    r.check(ok, f"{name}: GPU memory split for --rollout vllm: {detail}")


def check_heads(r: Report, where: str, sh: dict, tp: int) -> None:
    ok = sh["num_heads"] % tp == 0 and (sh["num_kv_heads"] % tp == 0 or tp % sh["num_kv_heads"] == 0)
    r.check(ok, f"{where}: tensor parallel {tp} vs {sh['num_heads']} query / {sh['num_kv_heads']} KV heads "
                f"({sh['preset']})")


def run(plan: Plan, *, echo=print) -> bool:
    from cotgen.recipe import runner

    r = Report()
    p = estimate.profile(plan.target)
    devices = int(p["devices"])
    r.say(f"# dry-run of {plan.recipe} -> {plan.out}")
    r.say(f"target: {p['profile']} ({devices} device(s), {p['memory_gib']} GiB each); every time and memory "
          "figure below is an ESTIMATE (assumptions in cotgen/recipe/estimate.py and on each line)")

    r.section("1. stage configurations (each resolved through its own dataclass) and what a run would do now")
    for row in runner.describe(plan):
        refused = row["action"].startswith("REFUSE")
        r.check(None if refused else True, f"{row['stage']:<20} {row['command']:<9} -> {row['folder']}  "
                                           f"[{row['action']}]")

    r.section("2. data")
    probs = Problems(plan)
    sets: dict[str, Any] = {}
    for s in plan.stages:
        c = s.settings
        if s.command in ("generate", "rl", "eval"):
            try:
                df = probs.load(c.source, c.split, c.limit, c.seed, c.data_dir)
                sets[s.name] = df
                r.check(df.height > 0, f"{s.name}: {c.source} / {c.split}: {df.height} problems")
            except CotgenError as err:
                r.check(False, f"{s.name}: {c.source} / {c.split}: {err}")
    tests = {s.name: set(sets[s.name]["question"]) for s in plan.stages if s.command == "eval" and s.name in sets}
    trains = {s.name: set(sets[s.name]["question"]) for s in plan.stages
              if s.command in ("generate", "rl") and s.name in sets}
    for ev, qs in tests.items():
        for tr, tq in trains.items():
            shared = len(qs & tq)
            r.check(shared == 0 or None, f"{ev} vs {tr}: {shared} held-out questions also in training")

    r.section("3. prompt lengths (tokenized with the Gemma 3 tokenizer of the embedded 270M)")
    tok = _tokenizer()
    from cotgen import prompts

    gen_max: dict[str, int] = {}
    for s in plan.stages:
        c = s.settings
        if s.name not in sets:
            continue
        questions = sets[s.name]["question"].to_list()
        if s.command == "generate":
            from cotgen.generate.config import resolved

            g = resolved(c)
            lens = _lengths(tok, [prompts.teacher_prompt(q, style=g.prompt_style, shots=g.shots, k=g.shots_k)
                                  for q in questions])
            gen_max[s.name] = c.max_tokens
            sets[s.name + "/teacher"] = lens
            worst = max(lens) + c.max_tokens
            r.check(worst <= c.max_model_len or c.backend != "vllm",
                    f"{s.name}: teacher prompts ({g.prompt_style}) {_stats(lens)}; + max_tokens {c.max_tokens} "
                    f"= {worst} vs max_model_len {c.max_model_len}")
            student = _lengths(tok, [prompts.student_prompt(q) for q in questions])
            sets[s.name + "/student"] = student
        elif s.command == "rl":
            from cotgen.train.rl_data import prompt_tokens

            lens = _lengths(tok, [prompts.student_prompt(q, chat=True) for q in questions])
            budget = prompt_tokens(c, lens, lambda n: n + 1)  # the padding `cotgen rl` will use
            sets[s.name + "/prompt_tokens"] = budget
            over = sum(n + 1 > budget for n in lens)
            r.check(True if over == 0 else (None if over < len(lens) else False),
                    f"{s.name}: student prompts {_stats(lens)}; {over}/{len(lens)} over max_prompt_tokens "
                    f"{budget} (dropped)")
        elif s.command == "eval":
            from cotgen.eval.config import resolved as eval_resolved
            from cotgen.eval.run import render_prompt

            e = eval_resolved(c)
            lens = _lengths(tok, [render_prompt(e, q) for q in questions])
            worst = max(lens) + c.max_tokens
            r.check(worst <= c.max_model_len or c.backend != "vllm",
                    f"{s.name}: {e.prompt_style} prompts {_stats(lens)}; + max_tokens {c.max_tokens} = {worst} "
                    f"vs max_model_len {c.max_model_len}")
    train = plan.stage("train").settings
    for name, completion in gen_max.items():
        student = sets.get(name + "/student", [])
        if student:
            longest = max(student) + completion + 2
            cut = sum(n + completion + 2 > train.max_len for n in student)
            r.check(True if cut == 0 else None,
                    f"train: student prompt ({_stats(student)}) + a completion of up to {completion} tokens "
                    f"(<= {longest}) vs max_len {train.max_len}: "
                    + ("every example fits" if cut == 0 else f"{cut}/{len(student)} prompts could see long "
                       "completions cut"))
    for s in plan.stages:
        if s.command == "distill logits":
            ok = s.settings.max_len >= train.max_len
            r.check(ok, f"{s.name}: max_len {s.settings.max_len} vs train max_len {train.max_len}"
                    + ("" if ok else ": `cotgen distill train` refuses logits made for shorter rows"))

    r.section("4. model shapes (Tunix presets, abstract arrays: no weights)")
    shapes: dict[str, dict] = {}
    for s in plan.stages:
        if s.command not in ("generate", "distill logits", "train", "distill train", "rl", "eval"):
            continue
        spec = s.settings.teacher if s.command in ("generate", "distill logits") else s.settings.model
        if not spec:
            continue
        preset = preset_for(spec, plan)
        if preset is None:
            r.check(None, f"{s.name}: {spec}: no Tunix preset (tiny or unknown): no shape, no estimate")
            continue
        try:
            shapes[s.name] = shape(preset)
        except CotgenError as err:
            r.check(False, f"{s.name}: {spec}: {err}")
            continue
    for preset in sorted({sh["preset"] for sh in shapes.values()}):
        sh = _SHAPES[preset]
        users = ", ".join(n for n, x in shapes.items() if x["preset"] == preset)
        r.check(True, f"{preset}: {sh['params'] / 1e9:.3f} B parameters, {sh['num_layers']} layers, width "
                      f"{sh['embed_dim']}, {sh['num_heads']} heads / {sh['num_kv_heads']} KV x {sh['head_dim']}, "
                      f"vocab {sh['num_embed']}  ({users})")

    check_teacher_vocab(r, plan)

    r.section(f"5. meshes on {devices} device(s)")
    for s in plan.stages:
        c, sh = s.settings, shapes.get(s.name)
        if s.command in ("train", "distill train", "rl"):
            fsdp, tp = _mesh(c)
            r.check(fsdp * tp <= devices, f"{s.name}: mesh fsdp={fsdp} x tp={tp} = {fsdp * tp} of {devices} devices")
            if fsdp * tp < devices:
                r.check(None, f"{s.name}: {devices - fsdp * tp} device(s) idle")
            rows = c.batch_size * (c.num_generations if s.command == "rl" else 1)
            r.check(rows % fsdp == 0, f"{s.name}: {rows} rows per step over fsdp={fsdp}")
            if sh and tp > 1:
                check_heads(r, s.name, sh, tp)
            if s.command == "rl" and sh:
                from cotgen.train import rollouts

                why = rollouts.problem(c.rollout, sh["family"], p["platform"])
                r.check(why is None, f"{s.name}: rollout {c.rollout!r} for {sh['family']} on {p['platform']}"
                        + (f": {why}" if why else ": cotgen's vLLM engine (cotgen/train/vllm_rollout.py)"
                           if c.rollout == "vllm" and p["platform"] != "tpu" else ": supported by the pinned Tunix"))
                if c.rollout == "vllm" and p["platform"] == "gpu":
                    rl_memory_split(r, s.name, c, sh, p, sets.get(s.name + "/prompt_tokens", 256))
        elif s.command == "distill logits":
            check_logits_devices(r, s, sh, p)
        elif s.command in ("generate", "eval") and c.backend == "vllm":
            tp, dp = c.tensor_parallel_size, c.data_parallel_size
            r.check(tp * dp <= devices, f"{s.name}: vLLM tensor {tp} x data {dp} = {tp * dp} of {devices} devices")
            if sh:
                check_heads(r, s.name, sh, tp)

    r.section(f"6. ESTIMATES on {p['profile']} (not measured there)")
    total = 0.0
    keep = float(plan.target.get("keep_rate", 0.5))
    for s in plan.stages:
        c, sh = s.settings, shapes.get(s.name)
        row: dict[str, Any] | None = None
        if s.command in ("generate", "eval") and (sh or p["kind"] == "cpu") and s.name in sets:
            n_problems = sets[s.name].height
            n = c.n if s.command == "generate" else 1 + (c.k if c.k > 1 else 0)
            row = estimate.sampling(p, sh, problems=n_problems, n=n, prompt_tokens=400, max_tokens=c.max_tokens,
                                    tp=c.tensor_parallel_size, dp=c.data_parallel_size, stage=s.command)
        elif s.command in ("train", "distill train") and (sh or p["kind"] == "cpu"):
            fsdp, _ = _mesh(c)
            steps = c.steps or _train_steps(plan, c, sets, keep)
            row = estimate.train(p, sh or {}, steps=steps, batch=c.batch_size, max_len=c.max_len,
                                 lora=c.lora_rank > 0, fsdp=fsdp, param_bytes=4 if c.dtype == "float32" else 2) \
                if sh else estimate.train(p, {"params": 0, "num_layers": 0, "embed_dim": 0, "num_embed": 0},
                                          steps=steps, batch=c.batch_size, max_len=c.max_len,
                                          lora=c.lora_rank > 0, fsdp=fsdp, param_bytes=4)
        elif s.command == "rl" and (sh or p["kind"] == "cpu"):
            fsdp, _ = _mesh(c)
            row = estimate.rl(p, sh or {"params": 0, "num_layers": 0, "embed_dim": 0, "num_embed": 0},
                              steps=c.steps, batch=c.batch_size, generations=c.num_generations,
                              max_tokens=c.max_tokens, prompt_tokens=sets.get(s.name + "/prompt_tokens", 256),
                              lora=c.lora_rank > 0, fsdp=fsdp, param_bytes=4 if c.dtype == "float32" else 2)
        elif s.command == "distill logits" and (sh or p["kind"] == "cpu"):
            row = logits_estimate(plan, s, sh, p, sets, keep)
        elif s.command == "filter":
            row = {"seconds": 30.0, "assumes": "verifier ~100k traces/s numeric path + start-up (bench_filter)"}
        elif s.command == "export":
            row = {"seconds": 60.0 if p["kind"] == "cpu" else 300.0, "assumes": "load, merge LoRA, write"}
        if row is None:
            continue
        if s.command == "distill train" and c.logits is not None:
            add_kd_memory(plan, row, c, sh, p)
        total += row["seconds"]
        mem = f", {row['memory_per_device_gib']} GiB per device" if "memory_per_device_gib" in row else ""
        fits = row.get("fits", True)
        why = f": {row['why']}" if not fits and row.get("why") else ""
        r.check(bool(fits), f"{s.name:<20} ~{estimate.fmt_seconds(row['seconds'])}{mem}  "
                                         f"({row.get('assumes', '')}){why}")
        if "storage_bytes" in row:
            check_storage(r, s, row, p)
    budget = plan.target.get("budget_hours")
    if budget:
        r.check(total <= budget * 3600, f"total ~{estimate.fmt_seconds(total)} against a budget of {budget} h")
    else:
        r.check(True, f"total ~{estimate.fmt_seconds(total)}")
    r.say("")
    r.say(f"{r.failures} failure(s), {r.warnings} warning(s)")
    echo("\n".join(r.lines))
    return r.failures == 0


def _kept(plan: Plan, sets: dict, keep: float) -> list[tuple[str, float, int]]:
    """(generate stage, training examples expected from it, its max_tokens) for every generate phase: problems x
    min(n x keep rate, max_per_problem), less the validation share."""
    out = []
    for s in plan.stages:
        if s.command == "generate" and s.name in sets:
            g, f = s.settings, plan.stage(s.name.replace("generate", "filter", 1)).settings
            per = min(g.n * keep, f.max_per_problem)
            out.append((s.name, sets[s.name].height * per * (1 - f.val_fraction), g.max_tokens))
    return out


def _train_steps(plan: Plan, c, sets: dict, keep: float) -> int:
    """Steps of an epoch-based train stage (`c`: its config), from the problems generated and an assumed keep
    rate."""
    kept = _kept(plan, sets, keep)
    examples = sum(ex for _, ex, _ in kept)
    tokens = sum(ex * (150 + max_tokens * 0.5) for _, ex, max_tokens in kept)
    rows = tokens / (c.max_len * 0.9) if c.packing else examples
    return max(1, math.ceil(rows * (c.epochs or 1) / c.batch_size))


# ------------------------------------------------------------------------------------------- offline distillation
MULTIMODAL = ("gemma3_4b", "gemma3_12b", "gemma3_27b")  # HF Gemma3ForConditionalGeneration, 262,208 rows


def extra_rows(spec: str, sh: dict | None) -> int:
    """Embedding rows past Gemma 3's 262,144 text tokens: 64 in HF's image-text checkpoints (Gemma 3 4B+), read
    from a local folder's config.json, else told by the preset."""
    config = Path(spec) / "config.json"
    if config.is_file():
        import json

        hf = json.loads(config.read_text())
        rows = hf.get("text_config", hf).get("vocab_size", 0)
        return max(0, rows - 262_144) if hf.get("model_type", "").startswith("gemma3") else 0
    return 64 if sh and sh["preset"].startswith(MULTIMODAL) else 0


def logits_devices(c) -> int:
    """Devices `cotgen distill logits` splits its teacher over: a vLLM tensor-parallel size or a Tunix mesh where
    its config has one; LogitsConfig has neither today, so both producers hold the whole teacher on one device."""
    if c.backend == "vllm":
        return int(getattr(c, "tensor_parallel_size", 1))
    return math.prod(_mesh(c)) if getattr(c, "mesh", None) else 1


def check_logits_devices(r: Report, s, sh: dict | None, p: dict) -> None:
    c, devices = s.settings, int(p["devices"])
    used = logits_devices(c)
    r.check(True if used == devices else (None if used < devices else False),
            f"{s.name}: the teacher ({c.backend}) on {used} of {devices} device(s)"
            + (" (cotgen distill logits has no tensor parallelism or mesh: one device)" if used == 1 < devices
               else ""))
    if sh and c.backend == "vllm" and used > 1:
        check_heads(r, s.name, sh, used)
    if c.backend == "vllm" and p["platform"] == "tpu" and extra_rows(c.teacher, sh):
        # tpu-inference v0.22.1 (prompt log-probs added) to v0.27.0 and main (2026-08-22), TPUModelRunner
        # execute: "prompt_logprobs is not supported for multimodal models", raised in the engine's step; only
        # limit_mm_per_prompt with every modality at 0 turns the model text-only, and cotgen does not set it
        r.check(False, f"{s.name}: vllm-tpu refuses prompt_logprobs for multimodal models (tpu-inference "
                f"tpu_inference/runner/tpu_runner.py) and {c.teacher} is a Gemma 3 4B+ checkpoint "
                "(Gemma3ForConditionalGeneration); use backend = \"tunix\"")


def logits_estimate(plan: Plan, s, sh: dict | None, p: dict, sets: dict, keep: float) -> dict | None:
    """The logits stage's row from the kept traces (`_kept`) and the prompts measured in section 3, paired by
    question (lengths include <bos>): the student's prompt + completion + <end_of_turn>, cut at max_len, is
    stored; under `teacher_prompt` auto or trace the teacher reads the same completion after the trace's own
    prompt, and only the completion's rows are read back."""
    c = s.settings
    kept = _kept(plan, sets, keep)
    if not kept:  # train.data given: nothing says how many tokens
        return None
    trace = c.teacher_prompt != "student"  # auto: generated traces carry their prompt (the filter's teacher_prompt)
    share = p.get("completion_fraction", 0.5)
    examples = tokens = teacher = rows = 0.0
    longest = 0
    for name, ex, max_tokens in kept:
        student_lens = sets.get(name + "/student") or [150]
        own_lens = (sets.get(name + "/teacher") or student_lens) if trace else student_lens
        student, own = statistics.mean(student_lens), statistics.mean(own_lens)
        n = min(student + max_tokens * share + 1, c.max_len)  # the student's row, cut at max_len
        examples += ex
        tokens += ex * n
        teacher += ex * (own + n - student)
        rows += ex * ((n - student) if trace else n - 1)  # positions whose log-probs are read
        # the longest scored sequence: a completion of max_tokens, cut where the student's row reaches max_len
        longest = max(longest, max(o + max(0, min(max_tokens + 1, c.max_len - n_s))
                                   for o, n_s in zip(own_lens, student_lens)))
    return estimate.logits(p, sh, tokens=tokens, examples=examples, teacher_tokens=teacher, read_rows=rows,
                           top_k=c.top_k, backend=c.backend, devices=logits_devices(c),
                           dtype_bytes=4 if c.dtype == "float32" or (c.dtype, c.backend) == ("auto", "tunix") else 2,
                           batch_tokens=c.batch_tokens,
                           longest=int(longest), extra_ids=extra_rows(c.teacher, sh))


def check_storage(r: Report, s, row: dict, p: dict) -> None:
    size, disk = row["storage_bytes"], p.get("disk_gib")
    r.check(disk is None or size <= disk * GIB,
            f"{s.name}: {row['tokens'] / 1e6:.1f} M tokens stored at top_k {s.settings.top_k}: ~{size / GIB:.1f} GiB "
            f"({size / row['tokens']:.0f} B a token: cotgen/distill/store.py)"
            + (f" of the target's {disk} GiB disk (disk_gib)" if disk is not None else ""))


def add_kd_memory(plan: Plan, row: dict, c, sh: dict | None, p: dict) -> None:
    """Offline KD on a train row: SFT's time (README: offline top-64 KD steps took 1.01x SFT's) and memory plus
    the batch's top-k (estimate.kd_topk_memory)."""
    k = next(x for x in plan.stages if x.command == "distill logits").settings.top_k
    fsdp, _ = _mesh(c)
    extra = estimate.kd_topk_memory(sh or {"num_embed": 0}, rows_per_device=c.batch_size / max(fsdp, 1),
                                    max_len=c.max_len, top_k=k, temperature=c.temperature)
    row["memory_per_device_gib"] = round(row["memory_per_device_gib"] + extra / GIB, 2)
    row["fits"] = row["memory_per_device_gib"] < p["memory_gib"]
    row["assumes"] += (f"; offline top-{k} KD at T = {c.temperature:g}: +{extra / GIB:.2f} GiB per device, "
                       "steps as SFT's")
