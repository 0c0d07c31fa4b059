"""`cotgen eval`: measure a model's reasoning accuracy the way the field reports it, under a pinned protocol.

Method: load the problems (`cotgen.sources`), check the model spec, render one prompt per problem (the student
prompt in a Gemma turn for trained or instruction-tuned students; `few_shot.jinja` with exemplars for base models,
the default for the embedded gemma-3-270m), then sample through generate's backend: a greedy pass (temperature 0,
one sample) and, when k > 1, k samples at the temperature. Every completion is read and judged by the filter
stage's extractor and verifier (`cotgen.eval.adapters`), metrics come from `cotgen.eval.metrics`, and the report
(`cotgen.eval.report`) pins the protocol: prompt template and a rendered example, exemplars, sampling parameters,
extraction rules, model, and the data file's sha256.
Order of checks: configuration, problems, model spec; only then does an engine start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from cotgen import __version__, prompts
from cotgen.config import write_resolved
from cotgen.errors import CotgenError
from cotgen.eval import engine, metrics, records, report
from cotgen.eval.config import EvalConfig, resolved
from cotgen.io import check_writable, sha256_file

log = logging.getLogger(__name__)

BREAKDOWN_FIELDS = ("level", "subject")


def run(cfg: EvalConfig) -> dict:
    """Evaluate; write the report into cfg.out; return metrics.json's content."""
    wall = time.perf_counter()
    cfg = resolved(cfg)
    check_writable(cfg.out)  # before the sampling, not after it
    problems = load(cfg)
    model = check_model(cfg)
    texts = {pid: render_prompt(cfg, q) for pid, q in problems.select("id", "question").iter_rows()}
    log.info("eval %s on %s/%s: %d problems, greedy%s, %s backend", cfg.model, cfg.source, cfg.split,
             problems.height, f" + {cfg.k} samples at T={cfg.temperature}" if cfg.k > 1 else "", cfg.backend)
    results = engine.sample(cfg, texts)
    samples = records.score(pl.concat([records.frame(r.samples, name, r.sampling.temperature, problems)
                                       for name, r in results.items()]))
    per_problem = metrics.per_problem(samples)
    summary = metrics.summarize(samples, per_problem)
    breakdowns = {by: metrics.breakdown(per_problem, by) for by in BREAKDOWN_FIELDS}
    breakdowns = {by: table for by, table in breakdowns.items() if table.height}
    proto = protocol(cfg, problems, model, results, texts)
    timings = _timings(results, wall)
    questions = problems.select(pl.col("id").alias("problem_id"), "question", pl.col("answer").alias("gold"))
    per_problem = questions.join(per_problem, on="problem_id", how="left", maintain_order="left")
    report.write(cfg.out, samples, per_problem, summary, breakdowns, proto, timings)
    write_resolved(cfg, cfg.out, "eval")
    return json.loads((Path(cfg.out) / "metrics.json").read_text(encoding="utf-8"))


def load(cfg: EvalConfig) -> pl.DataFrame:
    from cotgen.sources import load_problems

    df = load_problems(cfg.source, cfg.split, data_dir=cfg.data_dir, limit=cfg.limit, seed=cfg.seed)
    if df.height == 0:
        raise CotgenError(f"{cfg.source}/{cfg.split} holds no problems")
    unique = df.unique("id", keep="first", maintain_order=True)
    if unique.height < df.height:
        log.warning("%d repeated problem(s) in %s/%s evaluated once", df.height - unique.height, cfg.source,
                    cfg.split)
    return unique


def check_model(cfg: EvalConfig) -> dict:
    """Cheap checks that the model can load, before any engine starts; returns its description for the
    protocol."""
    if cfg.backend == "openai":
        return {"spec": cfg.model, "kind": "served", "base_url": cfg.base_url, "api": cfg.api or "completions"}
    from cotgen.models import resolve

    source = resolve(cfg.model)
    info = {"spec": cfg.model, "kind": source.kind}
    if source.kind == "tiny":
        return info | {"seed": source.seed}
    if source.kind == "orbax":
        if cfg.backend == "vllm":
            raise CotgenError(f"the vllm backend loads Hugging Face folders; {cfg.model!r} is an orbax "
                              "checkpoint (use --backend tunix)")
        return info | {"path": str(source.path), "preset": source.preset}
    folder = Path(source.path)
    config = folder / "config.json"
    try:
        hf = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CotgenError(f"model folder {folder} does not load: config.json is unreadable ({err})") from None
    if not list(folder.glob("*.safetensors")):
        raise CotgenError(f"model folder {folder} does not load: no *.safetensors weights")
    if not any((folder / name).is_file() for name in ("tokenizer.model", "tokenizer.json")):
        raise CotgenError(f"model folder {folder} does not load: no tokenizer.model or tokenizer.json")
    return info | {"path": str(folder), "model_type": hf.get("model_type"),
                   "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest()}


def render_prompt(cfg: EvalConfig, question: str) -> str:
    if cfg.prompt_style == "few_shot":
        return prompts.teacher_prompt(question, style="few_shot", shots=cfg.shots, k=cfg.shots_k)
    return prompts.student_prompt(question, chat=True)


def template_name(cfg: EvalConfig) -> str:
    if cfg.prompt_style == "few_shot":
        return f"few_shot.jinja ({cfg.shots_k} exemplars of shots/{cfg.shots}.jsonl, student_target.jinja layout)"
    return "student.jinja in gemma_turn.jinja (one user turn + generation prompt)"


def data_origin(cfg: EvalConfig) -> dict:
    """Where the problems came from: the local file and its sha256, or the hub repository (revision unpinned)."""
    from cotgen import sources

    if cfg.source in sources.BUILTINS:
        data_dir = cfg.data_dir or os.environ.get("COTGEN_DATA_DIR") or None
        if data_dir is None:
            repo, config = sources.BUILTINS[cfg.source].hub
            return {"data_file": f"hf://{repo}" + (f" ({config})" if config else ""),
                    "data_sha256": "unpinned: loaded from the Hugging Face hub"}
        path = Path(data_dir) / cfg.source / f"{cfg.split}.jsonl"
    elif cfg.source.startswith("rg:"):
        from importlib import metadata

        return {"data_file": f"reasoning-gym {metadata.version('reasoning-gym')} {cfg.source}, seed {cfg.seed}",
                "data_sha256": "generated"}
    else:
        path = Path(cfg.source.removeprefix("file:"))
    return {"data_file": str(path.resolve()), "data_sha256": sha256_file(path)}


def protocol(cfg: EvalConfig, problems: pl.DataFrame, model: dict, results: dict, texts: dict) -> dict:
    """Everything that decides the numbers, flat keys first (compare reads them)."""
    from cotgen.verify import extract

    sampled = results.get("sampled")
    greedy = results["greedy"].sampling
    return {
        "model": cfg.model, "backend": cfg.backend, "dtype": cfg.dtype, "source": cfg.source, "split": cfg.split,
        "limit": cfg.limit, "problems": problems.height, **data_origin(cfg),
        "prompt_style": cfg.prompt_style, "prompt_template": template_name(cfg),
        "shots": cfg.shots if cfg.prompt_style == "few_shot" else None,
        "shots_k": cfg.shots_k if cfg.prompt_style == "few_shot" else 0,
        "k": cfg.k, "temperature": cfg.temperature if cfg.k > 1 else None,
        "top_p": cfg.top_p if cfg.k > 1 else None, "max_tokens": cfg.max_tokens, "seed": cfg.seed,
        "greedy_sampling": _sampling(greedy),
        "sampled_sampling": _sampling(sampled.sampling) if sampled else None,
        "extraction": "cotgen.verify.extract ladder, first hit wins: " + " > ".join(extract.METHODS),
        "verifier": _verifier_name(),
        "format_check": "cotgen.prompts.STUDENT_FORMAT_RE on the whole completion",
        "voting": "maj@k: first k samples; unparsed answers do not vote; ties to the earliest first vote; "
                  "key = cotgen.eval.adapters.add_vote",
        "model_info": model,
        "cotgen_version": __version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "prompt_example": next(iter(texts.values())),
    }


def _sampling(s) -> dict:
    return {"n": s.n, "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
            "stop": list(s.stop), "stop_token_ids": list(s.stop_token_ids)}


def _verifier_name() -> str:
    from cotgen.eval import adapters

    return adapters.VERIFIER


def _timings(results: dict, wall: float) -> dict:
    out = {}
    for name, r in results.items():
        tokens = sum(s.completion_tokens for s in r.samples)
        out[f"{name}/startup_s"] = round(r.startup_s, 2)
        out[f"{name}/generation_s"] = round(r.generation_s, 2)
        out[f"{name}/completion_tokens_per_s"] = round(tokens / r.generation_s, 2) if r.generation_s else None
    out["wall_s"] = round(time.perf_counter() - wall, 2)
    return out
