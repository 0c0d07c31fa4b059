"""`cotgen distill logits`: the teacher's top-k next-token log-probabilities for every token of a dataset.

Checklist:
1. Cheap checks first: the data's schema, the output folder (another command's output, or logits made with
   other options or for other data, is refused; an unfinished folder made with the same options continues
   after its last complete shard; a finished one is left as it is).
2. Tokenize exactly as `cotgen train` does (`cotgen.train.data.tokenize`, same `--max-len`), with the
   teacher's tokenizer, so a student's training batch and the stored rows line up token for token. With
   `--teacher-prompt trace` (`auto` where the data has a teacher_prompt column) the teacher reads each
   completion after the prompt it was sampled with, and its rows are moved to the student's positions
   (`cotgen.distill.align`); the longest such sequence must fit the teacher's context. On vLLM the prefix the
   prompts share (the few-shot exemplars) is computed once and read from the prefix cache after that
   (`--prefix-cache`); a request whose cached part would cover a row the loss reads is recomputed without it.
3. Producers, one format (`cotgen.distill.store`):
   - `vllm`: one offline engine; each example is a token-id prompt with `SamplingParams(prompt_logprobs=k,
     max_tokens=1)` (raw logits' log-softmax; `max_logprobs` raised to k; on CPU no chunked prefill, see
     `cotgen.engines.vllm_backend.cpu_engine_args`). `--batch-tokens` bounds the prompt tokens per engine
     step, because vLLM materialises a (tokens, vocab) float32 array for them (8 GiB at 8,192 tokens).
   - `tunix`: the teacher's JAX forward pass over packed rows; the final hidden states are projected onto
     the vocabulary `CHUNK` positions at a time inside the jitted function (logsumexp and `lax.top_k`), so no
     (rows, length, 262,144) array is ever built.
   A 262,208-row teacher (HF Gemma 3 4B+) is cut to the 262,144 text tokens first.
4. Shards written atomically, progress with rate and ETA, then `manifest.json` (bytes per token included).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from cotgen import __version__
from cotgen.config import describe_changes, resolve, run_command, to_dict, write_resolved
from cotgen.distill import align, store
from cotgen.distill.config import LOGITS_IDENTITY, LogitsConfig, resolved_dtype
from cotgen.distill.vocab import logits_vocab, tokenizer_hash
from cotgen.errors import CotgenError
from cotgen.io import check_writable, read_json, write_text
from cotgen.models import known_family
from cotgen.models.tokenizer import END_OF_TURN
from cotgen.train import data

log = logging.getLogger("cotgen.distill")
COMMAND = "distill-logits"
CHUNK = 256  # positions the tunix producer projects onto the vocabulary at once (256 x 262k x 4 B = 268 MB)


# ---------------------------------------------------------------------------------------------------- inputs
def read_data(cfg: LogitsConfig) -> data.Examples:
    train_path, _ = data.find_files(cfg.data)
    examples = data.read_examples(train_path)
    if cfg.limit is not None:
        teacher = examples.teacher_prompts
        examples = dataclasses.replace(examples, prompts=examples.prompts[:cfg.limit],
                                       completions=examples.completions[:cfg.limit],
                                       teacher_prompts=teacher[:cfg.limit] if teacher is not None else None)
    return examples


def check_out(cfg: LogitsConfig, fingerprint: str) -> bool:
    """True when `--out` already holds these logits, finished; CotgenError when it holds anything else."""
    out = cfg.out
    if not out.exists():
        check_writable(out)  # now, not after the teacher has loaded
        return False
    if not out.is_dir():
        raise CotgenError(f"--out {out} is a file")
    command = run_command(out)
    if command is None:
        if any(out.iterdir()):
            raise CotgenError(f"--out {out} is not empty and holds no `cotgen distill logits` output")
        return False
    if command != COMMAND:
        raise CotgenError(f"--out {out} holds the output of `cotgen {command}`; choose another folder")
    old = to_dict(resolve(LogitsConfig, out / "config.toml"))
    old = {k: v for k, v in old.items() if k in LOGITS_IDENTITY}
    new = {k: v for k, v in to_dict(cfg).items() if k in LOGITS_IDENTITY}
    shown = describe_changes(old, new)
    if shown:
        raise CotgenError(f"--out {out} holds logits made with other options ({shown}); "
                          "choose another folder")
    progress = out / "progress.json"
    state = read_json(progress) if progress.is_file() else {}
    if state.get("data_fingerprint") not in (None, fingerprint):
        raise CotgenError(f"--out {out} holds logits of other data ({state.get('data_file')}); "
                          "choose another folder")
    return (out / store.MANIFEST).is_file()


def teacher_tokenizer(spec: str):
    """The teacher's tokenizer without loading its weights (None where only loading the model tells)."""
    from cotgen.models import resolve as resolve_model
    from cotgen.models.tokenizer import Tokenizer

    source = resolve_model(spec)
    if source.kind == "tiny":
        from cotgen.models import tiny

        return Tokenizer.from_file(tiny.tokenizer_path())
    if source.kind == "hf":
        return Tokenizer.from_folder(source.path)
    return None


# -------------------------------------------------------------------------------------------------- producers
class TunixProducer:
    name = "tunix"

    def __init__(self, cfg: LogitsConfig, loaded, max_len: int):
        import jax
        from flax import nnx

        from cotgen.models.load import output_head

        self.model, self.k, self.max_len = loaded.model, cfg.top_k, max_len  # the longest scored sequence
        head = output_head(loaded.family)  # Gemma 2 soft-caps its final logits
        self.vocab = logits_vocab(loaded.config.num_embed)
        self.rows = max(1, cfg.batch_tokens // max_len)
        if self.k > self.vocab:
            raise CotgenError(f"--top-k {self.k} exceeds the teacher's vocabulary ({self.vocab})")
        vocab, k = self.vocab, self.k

        @nnx.jit
        def top(model, tokens, positions, segments):
            from cotgen.train.sft import segment_mask

            model(tokens, positions, None, segment_mask(segments), output_hidden_states=True)
            # (B, L, D); the logits are unused, so XLA drops their computation
            hidden = jax.tree.leaves(nnx.pop(model, nnx.Intermediate))[0]
            b, length, d = hidden.shape
            n = b * length
            flat = jax.numpy.pad(hidden.reshape(n, d), ((0, -n % CHUNK), (0, 0))).reshape(-1, CHUNK, d)

            def chunk(x):  # (CHUNK, D) -> (CHUNK, k) ids and log-probabilities
                logits = head(model, x)[:, :vocab].astype(jax.numpy.float32)
                values, ids = jax.lax.top_k(logits, k)
                return ids, values - jax.nn.logsumexp(logits, axis=-1, keepdims=True)

            ids, lps = jax.lax.map(chunk, flat)  # (chunks, CHUNK, k)
            return ids.reshape(-1, k)[:n].reshape(b, length, k), lps.reshape(-1, k)[:n].reshape(b, length, k)

        self._top = top

    def __call__(self, seqs: list[np.ndarray], starts=None) -> list[tuple[np.ndarray, np.ndarray]]:
        lengths = np.array([len(s) for s in seqs])
        length = -(-self.max_len // 64) * 64  # one compiled shape
        rows = data.epoch_rows(lengths, 0, seed=0, max_len=self.max_len, packing=True, window=len(seqs))
        tok = data.Tokenized(seqs, np.zeros(len(seqs), dtype=np.int64), 0, 0)
        out: list = [None] * len(seqs)
        for start in range(0, len(rows), self.rows):
            chunk = rows[start:start + self.rows]
            batch = data.make_batch(chunk, tok, self.rows, length)
            ids, lps = self._top(self.model, batch["tokens"], batch["positions"], batch["segments"])
            ids, lps = np.asarray(ids), np.asarray(lps)
            for r, row in enumerate(chunk):
                off = 0
                for i in row:
                    n = int(lengths[i])
                    out[i] = (ids[r, off:off + n - 1], lps[r, off:off + n - 1])
                    off += n
        return out


class VllmProducer:
    name = "vllm"

    def __init__(self, cfg: LogitsConfig, max_len: int):
        from cotgen.engines import vllm_backend

        vllm_backend.set_environment()
        folder = vllm_backend.model_folder(cfg.teacher)
        config = json.loads((Path(folder) / "config.json").read_text())
        rows = config.get("text_config", config)["vocab_size"]
        self.vocab, self.k = logits_vocab(rows), cfg.top_k
        self.ask = self.k + (rows - self.vocab)  # ids past the text vocabulary are dropped afterwards
        self.prefix_cache, self.cached_tokens, self.recomputed = cfg.prefix_cache, 0, 0
        max_model_len = max_len + 1  # max_len: the longest scored sequence
        engine = {**vllm_backend.cpu_engine_args(max_model_len),
                  "max_num_batched_tokens": max(max_model_len, cfg.batch_tokens)}
        from vllm import LLM

        self.llm = LLM(model=folder, dtype=cfg.dtype, seed=0, max_model_len=max_model_len,
                       enforce_eager=cfg.enforce_eager, max_logprobs=self.ask,
                       enable_prefix_caching=cfg.prefix_cache, **engine)

    def prime(self, prefix: np.ndarray) -> None:
        """Compute a prefix every sequence shares (the exemplars) once, so later requests read it from the cache."""
        if self.prefix_cache and len(prefix) > 1:
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt

            self.llm.generate([TokensPrompt(prompt_token_ids=[int(t) for t in prefix])],
                              SamplingParams(max_tokens=1, detokenize=False), use_tqdm=False)

    def __call__(self, seqs: list[np.ndarray], starts=None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Rows 0..n-2 of each sequence; `starts[i]`: the first row needed (earlier ones come back as zeros),
        which lets vLLM read the positions before it from its prefix cache."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        starts = [0] * len(seqs) if starts is None else [int(s) for s in starts]

        def ask(indices, cached):
            # vLLM skips its prefix cache for prompt log-probs by default (cached positions get none); reading
            # it is safe where no needed position is cached, which is checked below
            params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=self.ask, detokenize=False,
                                    flat_logprobs=True, skip_reading_prefix_cache=not cached)
            prompts = [TokensPrompt(prompt_token_ids=[int(t) for t in seqs[i]]) for i in indices]
            return self.llm.generate(prompts, params, use_tqdm=False)

        out: list = [None] * len(seqs)
        redo = []
        use_cache = self.prefix_cache and any(starts)
        for i, o in zip(range(len(seqs)), ask(range(len(seqs)), use_cache)):
            cached = o.num_cached_tokens or 0
            if cached > starts[i]:  # row r is computed only past the cached tokens: r >= cached
                redo.append(i)
                continue
            self.cached_tokens += cached
            out[i] = self._rows(o.prompt_logprobs, len(seqs[i]), starts[i])
        if redo:
            self.recomputed += len(redo)
            for i, o in zip(redo, ask(redo, False)):
                out[i] = self._rows(o.prompt_logprobs, len(seqs[i]), starts[i])
        return out

    def _rows(self, flat, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """vLLM's prompt logprobs (position j: token j given tokens < j; position 0 empty) -> rows 0..n-2
        (rows before `start` left at zero)."""
        ids = np.zeros((n - 1, self.k), dtype=np.int32)
        lps = np.zeros((n - 1, self.k), dtype=np.float32)
        for j in range(start + 1, n):
            a, b = flat.start_indices[j], flat.end_indices[j]
            # the scored prompt token comes first, and again among the top k when it ranks there: dedupe by id
            entries = sorted({flat.token_ids[e]: (flat.ranks[e], flat.token_ids[e], flat.logprobs[e])
                              for e in range(a, b) if flat.ranks[e] is not None and flat.ranks[e] <= self.ask
                              and flat.token_ids[e] < self.vocab}.values())[:self.k]
            if len(entries) < self.k:
                raise CotgenError(f"vLLM returned {len(entries)} logprobs at a position, expected {self.k}")
            ids[j - 1] = [e[1] for e in entries]
            lps[j - 1] = [e[2] for e in entries]
        return ids, lps

    def close(self) -> None:
        self.llm = None


# ---------------------------------------------------------------------------------------------------- run
def shared_prefix(seqs: list[np.ndarray]) -> np.ndarray:
    """The longest token prefix every sequence starts with (the few-shot exemplars)."""
    first = seqs[0]
    n = len(first)
    for seq in seqs[1:]:
        m = min(n, len(seq))
        diff = np.nonzero(first[:m] != seq[:m])[0]
        n = int(diff[0]) if len(diff) else m
    return first[:n]


def student_rows(top, tok: data.Tokenized, ttok: data.Tokenized, i: int, replace_end: bool, eot: int):
    """One example's teacher rows moved to the student's positions, its final <end_of_turn> made certain where
    the teacher read another prompt (cotgen.distill.align)."""
    ids, lps = align.to_student_rows(top[0], top[1], int(tok.n_prompt[i]), int(ttok.n_prompt[i]),
                                     len(tok.ids[i]))
    if replace_end:
        align.certain_row(ids, lps, len(tok.ids[i]) - 2, eot)
    return ids, lps


def check_context(teacher: str, longest: int, trace: bool) -> None:
    """The teacher must read the longest scored sequence within its context (its config's
    max_position_embeddings, where the spec is a Hugging Face folder)."""
    from cotgen.models import resolve as resolve_model

    source = resolve_model(teacher)
    if source.kind != "hf":
        return
    config = json.loads((Path(source.path) / "config.json").read_text())
    context = config.get("text_config", config).get("max_position_embeddings")
    if context is not None and longest > context:
        raise CotgenError(f"{teacher}: the longest sequence it must score is {longest} tokens "
                          f"({'its own prompt' if trace else 'the prompt'} and the completion), past its context of "
                          f"{context}; lower --max-len" + (" or use --teacher-prompt student" if trace else ""))


def _groups(seqs: list[np.ndarray], tokens: int):
    start, count = 0, 0
    for i, seq in enumerate(seqs):
        count += len(seq)
        if count >= tokens:
            yield seqs[start:i + 1]
            start, count = i + 1, 0
    if start < len(seqs):
        yield seqs[start:]


def run(cfg: LogitsConfig) -> dict:
    cfg = resolved_dtype(cfg)
    examples = read_data(cfg)
    fingerprint = data.fingerprint(examples)
    if check_out(cfg, fingerprint):
        log.info("%s already holds these logits", cfg.out)
        return store.read_manifest(cfg.out)
    started = time.perf_counter()
    loaded = None
    tokenizer = teacher_tokenizer(cfg.teacher)
    if cfg.backend == "tunix" or tokenizer is None:
        from cotgen.models.load import load

        if cfg.backend == "vllm":
            raise CotgenError(f"the vllm backend loads Hugging Face folders; "
                              f"use --backend tunix for {cfg.teacher}")
        loaded = load(cfg.teacher, dtype=cfg.dtype)
        tokenizer = loaded.tokenizer
    eot = tokenizer.piece_to_id(END_OF_TURN)
    if eot is None:
        raise CotgenError(f"{cfg.teacher}: the tokenizer has no {END_OF_TURN} piece")
    tok = data.tokenize(examples, tokenizer, eot, cfg.max_len)
    ttok = align.teacher_tokenized(examples, tok, tokenizer, cfg.teacher_prompt)
    scored = ttok or tok  # what the teacher reads; the shards hold rows at the student's positions
    replaced = align.ends_replaced(tok, ttok, eot)
    longest = int(scored.lengths.max())
    check_context(cfg.teacher, longest, ttok is not None)
    n, total_tokens = len(tok.ids), int(tok.lengths.sum())
    n_shards = -(-n // cfg.shard_examples)
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_resolved(cfg, cfg.out, COMMAND)
    progress = {"data_file": str(examples.path), "data_fingerprint": fingerprint}
    write_text(cfg.out / "progress.json", json.dumps(progress, indent=2) + "\n")
    log.info("%d examples, %d tokens (%d cut at %d, %d dropped), %d shards; the teacher reads %s prompts "
             "(%d tokens, longest %d)", n, total_tokens, tok.n_truncated, cfg.max_len, tok.n_dropped, n_shards,
             "the traces' own" if ttok is not None else "the student's", int(scored.lengths.sum()), longest)

    todo = [s for s in range(n_shards) if not (cfg.out / store.shard_name(s)).is_file()]
    producer = None
    if todo:
        producer = (TunixProducer(cfg, loaded, longest) if cfg.backend == "tunix"
                    else VllmProducer(cfg, longest))
        if ttok is not None and hasattr(producer, "prime"):
            producer.prime(shared_prefix(ttok.ids))
        log.info("teacher ready in %.1f s", time.perf_counter() - started)
    compute_start, done_tokens = time.perf_counter(), 0
    per = cfg.shard_examples
    todo_tokens = sum(int(scored.lengths[s * per:(s + 1) * per].sum()) for s in todo)
    for s in todo:
        first = s * cfg.shard_examples
        seqs = tok.ids[first:first + cfg.shard_examples]
        teacher_seqs = scored.ids[first:first + cfg.shard_examples]
        # rows the loss reads start at the teacher's last prompt token; with the student's own prompt every row is
        # kept (as before: the stored rows are then the teacher's whole next-token distribution)
        starts = ((ttok.n_prompt[first:first + cfg.shard_examples] - 1).tolist() if ttok is not None
                  else [0] * len(seqs))
        tops, at = [], 0
        for part in _groups(teacher_seqs, 8 * cfg.batch_tokens):  # a few forward passes per progress line
            tops += producer(part, starts[at:at + len(part)])
            at += len(part)
            done_tokens += int(sum(len(x) for x in part))
            rate = done_tokens / max(time.perf_counter() - compute_start, 1e-9)
            log.info("logits: %d/%d teacher tokens, %.0f tokens/s, ETA %.0f s", done_tokens, todo_tokens, rate,
                     (todo_tokens - done_tokens) / max(rate, 1e-9))
        if ttok is not None:
            tops = [student_rows(top, tok, ttok, i, replaced[i], eot)
                    for i, top in zip(range(first, first + len(seqs)), tops)]
        store.write_shard(cfg.out / store.shard_name(s), seqs, [t[0] for t in tops], [t[1] for t in tops])
    compute_s = time.perf_counter() - compute_start
    if producer is not None and hasattr(producer, "close"):
        producer.close()

    vocab = producer.vocab if producer is not None else logits_vocab(
        loaded.config.num_embed if loaded is not None else tokenizer.vocab_size)
    shards, size = [], 0
    for s in range(n_shards):
        count = min(cfg.shard_examples, n - s * cfg.shard_examples)
        path = cfg.out / store.shard_name(s)
        size += path.stat().st_size
        shards.append({"file": path.name, "first": s * cfg.shard_examples, "count": count})
    payload = (total_tokens - n) * cfg.top_k * 6 + total_tokens * 4
    manifest = {
        "format": store.FORMAT, "cotgen_version": __version__, "teacher": cfg.teacher, "backend": cfg.backend,
        "dtype": cfg.dtype, "top_k": cfg.top_k, "vocab": vocab, "tokenizer_hash": tokenizer_hash(tokenizer),
        "teacher_family": loaded.family if loaded is not None else known_family(cfg.teacher),
        "data_file": str(examples.path), "data_fingerprint": fingerprint, "max_len": cfg.max_len,
        "examples": n, "truncated": tok.n_truncated, "dropped": tok.n_dropped, "tokens": total_tokens,
        "rows": total_tokens - n, "shard_examples": cfg.shard_examples, "shards": shards, "bytes": size,
        "bytes_per_token": size / total_tokens, "payload_bytes_per_token": payload / total_tokens,
        "wall_s": round(time.perf_counter() - started, 1), "compute_s": round(compute_s, 1),
        "tokens_per_s": round(done_tokens / compute_s, 1) if done_tokens else None,
        "teacher_prompt": "trace" if ttok is not None else "student", "teacher_tokens": int(scored.lengths.sum()),
        "ends_replaced": int(replaced.sum()),
        "prefix_cached_tokens": getattr(producer, "cached_tokens", None),
        "recomputed_without_cache": getattr(producer, "recomputed", None),
    }
    write_text(cfg.out / store.MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest
