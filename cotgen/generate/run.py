"""`cotgen generate`: sample chain-of-thought traces from a teacher, resumable and exactly once.

Method: load the problems (one shard of them with --shard I/N: problem i belongs to shard sha256(id) mod N),
render one teacher prompt per problem (few-shot for base models, a Gemma turn otherwise), and ask the backend
for the (problem, sample index) pairs that OUT does not hold yet, `batch_size` problems at a time. Each
chunk's rows are committed as one Parquet file (see `cotgen.generate.store`), then the manifest is rewritten.
Order of checks: problems and teacher first, then OUT's parameters, and only then the engine starts, so bad
input fails in seconds. A failed sample (after the backend's retries) is committed as an error row and asked
for again by the next run; a chunk in which every sample failed stops the run (the server is down, say), and
any failure exits non-zero.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from datetime import UTC, datetime

import polars as pl

from cotgen import __version__, prompts
from cotgen.config import to_dict
from cotgen.engines.backend import Request, Sample, Sampling, default_batch, open_backend, request_seed, sampling_for
from cotgen.errors import CotgenError
from cotgen.generate.config import GenerateConfig, parse_shard, resolved, shard_tag
from cotgen.generate.store import Output
from cotgen.schemas import TRACE_SCHEMA

log = logging.getLogger(__name__)


def in_shard(problem_id: str, shard: str | None) -> bool:
    if shard is None:
        return True
    i, n = parse_shard(shard)
    return int.from_bytes(hashlib.sha256(problem_id.encode()).digest()[:8], "big") % n == i


def sampling_of(cfg: GenerateConfig) -> Sampling:
    return sampling_for(cfg.teacher, cfg.backend, prompt_style=cfg.prompt_style, n=cfg.n,
                        temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                        logprobs=cfg.logprobs, seed=cfg.seed, seeded=cfg.seeding != "engine")


def load_shard(cfg: GenerateConfig) -> pl.DataFrame:
    """This shard's problems, in source order, one row per problem id."""
    from cotgen.sources import load_problems

    df = load_problems(cfg.source, cfg.split, data_dir=cfg.data_dir, limit=cfg.limit, seed=cfg.seed)
    unique = df.unique("id", keep="first", maintain_order=True)
    if unique.height < df.height:
        log.warning("%d repeated problem(s) in %s/%s generated once", df.height - unique.height, cfg.source,
                    cfg.split)
    return unique.filter(pl.col("id").map_elements(lambda i: in_shard(i, cfg.shard), return_dtype=pl.Boolean))


def pending(cfg: GenerateConfig, problems: pl.DataFrame, done: pl.DataFrame) -> list[Request]:
    have: dict[str, set[int]] = {}
    for pid, idx in done.iter_rows():
        have.setdefault(pid, set()).add(idx)
    requests = []
    for pid, question in problems.select("id", "question").iter_rows():
        missing = tuple(i for i in range(cfg.n) if i not in have.get(pid, ()))
        if missing:
            prompt = prompts.teacher_prompt(question, style=cfg.prompt_style, shots=cfg.shots, k=cfg.shots_k)
            requests.append(Request(pid, prompt, missing, request_seed(cfg.seed, pid)))
    return requests


def rows(cfg: GenerateConfig, backend: str, samples: list[Sample], requests: list[Request],
         problems: pl.DataFrame) -> pl.DataFrame:
    prompt = {r.problem_id: r.prompt for r in requests}
    answer = dict(problems.select("id", "answer").iter_rows())
    data = [{**dataclasses.asdict(s), "source": cfg.source, "split": cfg.split,
             "answer": answer[s.problem_id], "prompt": prompt[s.problem_id], "teacher": cfg.teacher,
             "backend": backend,
             "prompt_style": cfg.prompt_style, "temperature": cfg.temperature, "top_p": cfg.top_p,
             "max_tokens": cfg.max_tokens} for s in samples]
    return pl.DataFrame(data, schema=TRACE_SCHEMA)


class Progress:
    """A tqdm bar (samples/s, tokens/s) where someone watches (`cotgen.progress`); one log line per chunk with
    the rate and ETA otherwise."""

    def __init__(self, total: int, done: int):
        from cotgen import progress

        self.total, self.count, self.tokens, self.start = total, done, 0, time.perf_counter()
        self.first = done
        self.bar = progress.bar(total=total, initial=done, unit="sample")

    def update(self, samples: int, tokens: int) -> None:
        self.count, self.tokens = self.count + samples, self.tokens + tokens
        rate = self.tokens / max(time.perf_counter() - self.start, 1e-9)
        if self.bar is not None:
            self.bar.update(samples)
            self.bar.set_postfix_str(f"{rate:.1f} tok/s")
        else:
            from cotgen.progress import eta

            elapsed = time.perf_counter() - self.start
            log.info("%d/%d samples, %.1f completion tok/s, %s", self.count, self.total, rate,
                     eta(self.count - self.first, self.total - self.first, elapsed))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(cfg: GenerateConfig, *, max_chunks: int | None = None) -> dict:
    """Generate what OUT lacks; return the manifest. `max_chunks` stops early (tests simulate a crash
    with it)."""
    wall = time.perf_counter()
    cfg = resolved(cfg)
    problems = load_shard(cfg)
    if cfg.backend != "openai":
        from cotgen.models import resolve

        resolve(cfg.teacher)  # unknown model: one line, before any work
    out = Output(cfg.out, shard_tag(cfg.shard))
    out.open(cfg.identity())
    try:
        done = out.done().filter(pl.col("problem_id").is_in(problems["id"].implode()))
        requests = pending(cfg, problems, done)
        todo = sum(len(r.sample_indices) for r in requests)
        m = manifest(cfg, problems.height, done.height, 0.0, [], 0.0, wall)
        if not requests:
            log.info("%s: all %d samples already done", cfg.out, done.height)
            out.write_manifest(m)
            return m
        log.info("%s: %d samples to generate (%d already done) with %s", cfg.out, todo, done.height,
                 cfg.backend)
        backend = open_backend(cfg.teacher, cfg, sampling_of(cfg))
        try:
            write_config(cfg, out)
            out.write_manifest(manifest(cfg, problems.height, done.height, backend.startup_s, [], 0.0, wall))
            return generate(cfg, out, backend, problems, requests, done.height, wall, max_chunks)
        finally:
            backend.close()
    finally:
        out.close()


def generate(cfg: GenerateConfig, out: Output, backend, problems: pl.DataFrame, requests: list[Request],
             done: int, wall: float, max_chunks: int | None) -> dict:
    batch = cfg.batch_size or default_batch(cfg.backend, cfg.n)
    if hasattr(backend, "plan"):
        backend.plan(requests)
    progress, new, gen_s = Progress(problems.height * cfg.n, done), [], 0.0
    m = manifest(cfg, problems.height, done, backend.startup_s, new, gen_s, wall)
    try:
        for c, at in enumerate(range(0, len(requests), batch)):
            if max_chunks is not None and c >= max_chunks:
                break
            chunk = requests[at:at + batch]
            start = time.perf_counter()
            samples = backend.generate(chunk)
            gen_s += time.perf_counter() - start
            out.commit(rows(cfg, backend.name, samples, chunk, problems))
            new += samples
            ok = [s for s in samples if s.error is None]
            progress.update(len(ok), sum(s.completion_tokens for s in ok))
            m = manifest(cfg, problems.height, done, backend.startup_s, new, gen_s, wall)
            out.write_manifest(m)
            if not ok:
                raise CotgenError(f"every sample of a chunk failed ({samples[0].error}); finished work is "
                                  f"kept in {cfg.out}: fix the cause and run the same command again")
    finally:
        progress.close()
    errors = [s for s in new if s.error is not None]
    if errors:
        raise CotgenError(f"{len(errors)} sample(s) failed (kept as error rows; first: {errors[0].error}); "
                          "run the same command again to retry them")
    log.info("%s: %d samples in %.1fs (%.1f samples/s, %.1f completion tok/s)", cfg.out, len(new), gen_s,
             m["throughput"]["samples_per_s"] or 0, m["throughput"]["completion_tokens_per_s"] or 0)
    return m


def manifest(cfg, n_problems: int, done: int, startup_s: float, new: list[Sample], gen_s: float,
             wall: float) -> dict:
    """Counts cover the whole shard; tokens, timings and throughput cover this invocation."""
    ok = [s for s in new if s.error is None]
    tokens = sum(s.completion_tokens for s in ok)
    finished = done + len(ok)
    return {
        "cotgen": {"command": "generate", "version": __version__},
        "params": cfg.identity(),
        "run": {k: v for k, v in to_dict(cfg).items() if k not in cfg.identity()},
        "problems": {"source": cfg.source, "split": cfg.split, "limit": cfg.limit, "shard": cfg.shard,
                     "count": n_problems},
        "counts": {"expected": n_problems * cfg.n, "finished": finished, "done_before": done,
                   "generated": len(ok), "errors": len(new) - len(ok)},
        "complete": finished == n_problems * cfg.n,
        "tokens_this_run": {"prompt": sum(s.prompt_tokens for s in ok), "completion": tokens},
        "timings_s": {"startup": round(startup_s, 2), "generation": round(gen_s, 2),
                      "wall": round(time.perf_counter() - wall, 2)},
        "throughput": {"samples_per_s": round(len(ok) / gen_s, 3) if gen_s else None,
                       "completion_tokens_per_s": round(tokens / gen_s, 2) if gen_s else None},
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_config(cfg: GenerateConfig, out: Output) -> None:
    import tomli_w

    from cotgen.io import write_text

    doc = {"cotgen": {"command": "generate", "version": __version__}, **to_dict(cfg)}
    write_text(out.dir / out.config_name, tomli_w.dumps(doc))
