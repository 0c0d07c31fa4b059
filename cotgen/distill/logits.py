"""`cotgen distill logits`: the teacher's top-k next-token log-probabilities for every token of a dataset.

Checklist:
1. Cheap checks first: the data's schema, the output folder (another command's output, or logits made with
   other options or for other data, is refused; an unfinished folder made with the same options continues
   after its last complete shard; a finished one is left as it is).
2. Tokenize exactly as `cotgen train` does (`cotgen.train.data.tokenize`, same `--max-len`), with the
   teacher's tokenizer, so a student's training batch and the stored rows line up token for token.
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
from cotgen.distill import store
from cotgen.distill.config import LOGITS_IDENTITY, LogitsConfig
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
        examples = dataclasses.replace(examples, prompts=examples.prompts[:cfg.limit],
                                       completions=examples.completions[:cfg.limit])
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

    def __init__(self, cfg: LogitsConfig, loaded):
        import jax
        from flax import nnx

        from cotgen.models.load import output_head

        self.model, self.k, self.max_len = loaded.model, cfg.top_k, cfg.max_len
        head = output_head(loaded.family)  # Gemma 2 soft-caps its final logits
        self.vocab = logits_vocab(loaded.config.num_embed)
        self.rows = max(1, cfg.batch_tokens // cfg.max_len)
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

    def __call__(self, seqs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
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

    def __init__(self, cfg: LogitsConfig):
        from cotgen.engines import vllm_backend

        vllm_backend.set_environment()
        folder = vllm_backend.model_folder(cfg.teacher)
        config = json.loads((Path(folder) / "config.json").read_text())
        rows = config.get("text_config", config)["vocab_size"]
        self.vocab, self.k = logits_vocab(rows), cfg.top_k
        self.ask = self.k + (rows - self.vocab)  # ids past the text vocabulary are dropped afterwards
        max_model_len = cfg.max_len + 1
        engine = {**vllm_backend.cpu_engine_args(max_model_len),
                  "max_num_batched_tokens": max(max_model_len, cfg.batch_tokens)}
        from vllm import LLM

        self.llm = LLM(model=folder, dtype=cfg.dtype, seed=0, max_model_len=max_model_len,
                       enforce_eager=cfg.enforce_eager, max_logprobs=self.ask, **engine)

    def __call__(self, seqs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=self.ask, detokenize=False,
                                flat_logprobs=True)
        prompts = [TokensPrompt(prompt_token_ids=[int(t) for t in s]) for s in seqs]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [self._rows(o.prompt_logprobs, len(s)) for o, s in zip(outputs, seqs)]

    def _rows(self, flat, n: int) -> tuple[np.ndarray, np.ndarray]:
        """vLLM's prompt logprobs (position j: token j given tokens < j; position 0 empty) -> rows 0..n-2."""
        ids = np.zeros((n - 1, self.k), dtype=np.int32)
        lps = np.zeros((n - 1, self.k), dtype=np.float32)
        for j in range(1, n):
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
    n, total_tokens = len(tok.ids), int(tok.lengths.sum())
    n_shards = -(-n // cfg.shard_examples)
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_resolved(cfg, cfg.out, COMMAND)
    progress = {"data_file": str(examples.path), "data_fingerprint": fingerprint}
    write_text(cfg.out / "progress.json", json.dumps(progress, indent=2) + "\n")
    log.info("%d examples, %d tokens (%d cut at %d, %d dropped), %d shards", n, total_tokens, tok.n_truncated,
             cfg.max_len, tok.n_dropped, n_shards)

    todo = [s for s in range(n_shards) if not (cfg.out / store.shard_name(s)).is_file()]
    producer = None
    if todo:
        producer = (TunixProducer(cfg, loaded) if cfg.backend == "tunix"
                    else VllmProducer(cfg))
        log.info("teacher ready in %.1f s", time.perf_counter() - started)
    compute_start, done_tokens = time.perf_counter(), 0
    per = cfg.shard_examples
    todo_tokens = sum(int(tok.lengths[s * per:(s + 1) * per].sum()) for s in todo)
    for s in todo:
        first = s * cfg.shard_examples
        seqs = tok.ids[first:first + cfg.shard_examples]
        tops = []
        for part in _groups(seqs, 8 * cfg.batch_tokens):  # a few forward passes per progress line
            tops += producer(part)
            done_tokens += int(sum(len(x) for x in part))
            rate = done_tokens / max(time.perf_counter() - compute_start, 1e-9)
            log.info("logits: %d/%d tokens, %.0f tokens/s, ETA %.0f s", done_tokens, todo_tokens, rate,
                     (todo_tokens - done_tokens) / max(rate, 1e-9))
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
    }
    write_text(cfg.out / store.MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest
