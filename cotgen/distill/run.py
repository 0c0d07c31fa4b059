"""`cotgen distill train`: logit distillation of a Gemma 3 student, online (teacher in memory) or offline
(stored top-k), on `cotgen train`'s machinery.

The checklist, in order:
1. Cheap checks before any compute: the data's schema; the output folder (`--resume` needs the same config and
   data); offline, the logits folder's manifest: same data fingerprint, same tokenizer, a shared vocabulary.
2. Devices and mesh as in `cotgen.train.sft` (`make_mesh`).
3. The student through `cotgen.models.load` and `cotgen.models.lora` (full weights, LoRA or QLoRA); online, the
   teacher too; then the vocabulary guard (`cotgen.distill.vocab`): one tokenizer, and logits cut to the
   shared vocabulary (HF Gemma 3 4B+ carry 262,208 rows, the 1B and 270M 262,144).
4. Data exactly as SFT: `cotgen.train.data` tokenizes, plans (shuffled, packed) and batches; offline, each
   batch also carries the stored top-k rows of its examples laid out at the same positions, after a check that
   every stored example has the same tokens as the student's tokenization.
5. `cotgen.distill.trainer.Trainer` (Tunix's DistillationTrainer, keeping packed batches whole) with
   `MaskedLogitStrategy` (online: full-vocabulary KL) or `TopKStrategy` (offline: KL of the renormalised
   teacher top k against the student's full-vocabulary log-probabilities at those ids, Gemma 3's recipe; see
   `cotgen.distill.losses`). Both blend alpha * T^2 * KL + (1 - alpha) * CE over completion tokens; both
   evaluate the student's completion-token NLL on validation.parquet (`cotgen train`'s validation loss).
   The same optimizer, schedule, orbax checkpoints and resume (the trainer restores the latest checkpoint and
   skips the batches already trained).
6. Metrics (`distill/kl`, `distill/ce`, ...) to OUT/metrics.jsonl and TensorBoard, OUT/loss.png, OUT/run.json.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from cotgen import __version__, runs
from cotgen.config import write_resolved
from cotgen.distill import align, store
from cotgen.distill.config import DistillConfig
from cotgen.errors import CotgenError
from cotgen.models.tokenizer import END_OF_TURN
from cotgen.train import data, sft

log = logging.getLogger("cotgen.distill")
COMMAND = "distill"


# ---------------------------------------------------------------------------------------------------- checks
def check_logits(cfg: DistillConfig, train_fingerprint: str) -> dict:
    """The logits folder's manifest, refused when it was made for other data or another --max-len."""
    manifest = store.read_manifest(cfg.logits)
    if manifest["data_fingerprint"] != train_fingerprint:
        raise CotgenError(f"--logits {cfg.logits} was made for other data ({manifest['data_file']}, "
                          f"{manifest['examples']} examples), not {cfg.data}; "
                          "run `cotgen distill logits` on it")
    if cfg.max_len > manifest["max_len"]:
        raise CotgenError(f"--max-len {cfg.max_len} exceeds the --max-len {manifest['max_len']} the logits "
                          f"in {cfg.logits} were made with; use at most {manifest['max_len']}")
    return manifest


def check_tokens(tok: data.Tokenized, topk: store.TopK, logits_dir: Path) -> None:
    """Every student example must be a prefix of the stored example with the same index."""
    if len(topk) < len(tok.ids):
        raise CotgenError(f"--logits {logits_dir} holds {len(topk)} examples, the data {len(tok.ids)}")
    for i, ids in enumerate(tok.ids):
        stored = topk.tokens(i)
        if len(stored) < len(ids) or not np.array_equal(stored[:len(ids)], ids):
            raise CotgenError(f"--logits {logits_dir}: example {i} was tokenized differently (another "
                              "tokenizer or --max-len); make the logits with the student's tokenizer and "
                              "--max-len")


def check_context(spec: str, teacher, longest: int) -> None:
    """An online teacher reading the traces' own prompts must hold the longest of them within its context."""
    context = getattr(teacher.config, "max_position_embeddings", None) or getattr(teacher.config, "max_seq_len", None)
    if context and longest > context:
        raise CotgenError(f"--teacher {spec}: the longest sequence it must read is {longest} tokens (its own "
                          f"prompt and the completion), past its context of {context}; lower --max-len or use "
                          "--teacher-prompt student")


class TopKBatches:
    """`cotgen.train.data.Batches` plus each batch's stored teacher top-k (B, L, k) at the same positions."""

    def __init__(self, batches: data.Batches, tok: data.Tokenized, topk: store.TopK):
        self.batches, self.tok, self.topk = batches, tok, topk
        self.step_time = batches.step_time

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        b = self.batches
        for batch, rows in zip(b, b.plan.batches):
            if not batch:  # a step a resumed run skips
                yield batch
                continue
            rows, size = data.local_rows(rows, b.batch_size, b.process)
            yield {**batch, **store.batch_topk(rows, self.tok.lengths, self.topk, size, b.max_len)}


class TeacherBatches:
    """`cotgen.train.data.Batches` plus, for an online teacher reading the traces' own prompts, each batch's
    teacher rows (the same examples, packed in the same order, their prompts the teacher's), the position in
    them each student position reads, and the replaced end rows (`cotgen.distill.align`)."""

    def __init__(self, batches: data.Batches, tok: data.Tokenized, ttok: data.Tokenized, replaced: np.ndarray,
                 pad_id: int):
        self.batches, self.tok, self.ttok, self.replaced, self.pad_id = batches, tok, ttok, replaced, pad_id
        self.step_time = batches.step_time
        self.length = align.row_length(batches.plan.batches, ttok)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        b = self.batches
        for batch, rows in zip(b, b.plan.batches):
            if not batch:  # a step a resumed run skips
                yield batch
                continue
            rows, size = data.local_rows(rows, b.batch_size, b.process)
            teacher = data.make_batch(rows, self.ttok, size, self.length, self.pad_id)
            index, end = align.gather_index(rows, self.tok, self.ttok, size, b.max_len, self.replaced)
            yield {**batch, **{f"teacher_{k}": v for k, v in teacher.items()}, "teacher_index": index,
                   "teacher_end": end}


# ---------------------------------------------------------------------------------------------------- run
def run(cfg: DistillConfig, *, callbacks=()) -> dict:
    """Distil; return the run summary (also OUT/run.json)."""
    train_path, val_path = data.find_files(cfg.data)
    train_ex = data.read_examples(train_path)
    val_ex = data.read_examples(val_path) if val_path else None
    fingerprint = data.fingerprint(train_ex, val_ex)
    manifest = check_logits(cfg, data.fingerprint(train_ex)) if cfg.logits is not None else None
    if cfg.distributed:
        import jax

        jax.distributed.initialize()
    import jax

    primary = jax.process_index() == 0
    if primary:
        runs.check_out(cfg, fingerprint, COMMAND)
    resuming = (cfg.out / "config.toml").is_file()

    from cotgen.distill import trainer as kd
    from cotgen.distill.vocab import same_family, shared_vocab, tokenizer_hash
    from cotgen.models import known_family, lora
    from cotgen.models.load import load
    from cotgen.train import metrics

    # refuse Gemma 2 <-> Gemma 3 before loading weights
    teacher_family = known_family(cfg.teacher) if cfg.teacher else (
        manifest.get("teacher_family") or known_family(manifest["teacher"]))
    same_family(cfg.teacher or f"{manifest['teacher']} (logits in {cfg.logits})", teacher_family, cfg.model,
                known_family(cfg.model))
    mesh = sft.make_mesh(cfg.mesh)
    started = time.perf_counter()
    loaded = load(cfg.model, dtype=cfg.dtype, mesh=mesh)
    tokenizer = loaded.tokenizer
    student_hash = tokenizer_hash(tokenizer)
    teacher = None
    if cfg.teacher is not None:
        teacher = load(cfg.teacher, dtype=cfg.dtype, mesh=mesh)
        vocab = shared_vocab(cfg.teacher, tokenizer_hash(teacher.tokenizer), teacher.config.num_embed,
                             cfg.model, student_hash, loaded.config.num_embed,
                             teacher_family=teacher.family, student_family=loaded.family)
    else:
        vocab = shared_vocab(f"{manifest['teacher']} (logits in {cfg.logits})", manifest["tokenizer_hash"],
                             manifest["vocab"], cfg.model, student_hash, loaded.config.num_embed,
                             teacher_family=manifest.get("teacher_family"), student_family=loaded.family)
    eot = tokenizer.piece_to_id(END_OF_TURN)
    if eot is None:
        raise CotgenError(f"{cfg.model}: the tokenizer has no {END_OF_TURN} piece to end the student's turn")

    process = (jax.process_index(), jax.process_count())
    tok = data.tokenize(train_ex, tokenizer, eot, cfg.max_len)
    topk, ttok, replaced = None, None, None
    if manifest is not None:
        topk = store.TopK(cfg.logits)
        check_tokens(tok, topk, cfg.logits)
    else:
        ttok = align.teacher_tokenized(train_ex, tok, tokenizer, cfg.teacher_prompt)
        replaced = align.ends_replaced(tok, ttok, eot)
        if ttok is not None:
            check_context(cfg.teacher, teacher, int(ttok.lengths.max()))
    shape = dict(batch_size=cfg.batch_size, max_len=cfg.max_len, seed=cfg.seed, window=cfg.pack_window,
                 steps=cfg.steps, epochs=cfg.epochs)
    plan = data.plan(tok.lengths, packing=cfg.packing, **shape)
    val_batches = data.validation_batches(val_ex, tokenizer, eot, cfg, process)
    fill = data.fill(plan, tok, cfg.batch_size, cfg.max_len)
    log.info("%s distillation: %d train examples (%d cut at %d, %d dropped), %d steps = %.2f epochs, "
             "%.1f%% real tokens per batch", cfg.mode, len(tok.ids), tok.n_truncated, cfg.max_len,
             tok.n_dropped, plan.steps, plan.epochs, 100 * fill["real_token_fraction"])

    if primary:
        cfg.out.mkdir(parents=True, exist_ok=True)
        write_resolved(cfg, cfg.out, COMMAND)
    state = {
        "status": "running", "cotgen_version": __version__, "mode": cfg.mode, "model": cfg.model, "student": cfg.model,
        "teacher": cfg.teacher or manifest["teacher"], "logits": str(cfg.logits) if cfg.logits else None,
        "top_k": manifest["top_k"] if manifest else None, "vocab": vocab, "method": cfg.method,
        "model_source": {"kind": loaded.source.kind, "path": str(loaded.source.path or "")},
        "data_files": [str(train_path), *([str(val_path)] if val_path else [])],
        "data_fingerprint": fingerprint,
        "examples": {"train": len(tok.ids), "truncated": tok.n_truncated, "dropped": tok.n_dropped,
                     "validation": len(val_ex) if val_ex else 0},
        "steps": plan.steps, "epochs": plan.epochs, "fill": fill, "temperature": cfg.temperature,
        "alpha": cfg.alpha,
        "teacher_prompt": manifest.get("teacher_prompt", "student") if manifest else (
            "trace" if ttok is not None else "student"),
        "devices": [str(d) for d in jax.devices()], "mesh": cfg.mesh,
    }
    if primary:
        runs.write_state(cfg.out, state)

    student = lora.adapt(loaded.model, cfg, mesh=mesh)
    strategy_cls = kd.MaskedLogitStrategy if teacher is not None else kd.TopKStrategy
    strategy = strategy_cls(vocab, cfg.temperature, cfg.alpha)
    from tunix.distillation import distillation_trainer

    wrap = None
    if topk is not None:
        def wrap(b):
            return TopKBatches(b, tok, topk)
    elif ttok is not None:
        def wrap(b):
            return TeacherBatches(b, tok, ttok, replaced, tokenizer.pad_id())

    def make_trainer(optimizer, training_config):
        return kd.Trainer(student, teacher.model if teacher else None, strategy, optimizer, training_config)

    trainer, start = sft.fit(cfg, make_trainer, distillation_trainer.TrainingConfig, plan=plan, tok=tok,
                             pad_id=tokenizer.pad_id(), process=process, val_batches=val_batches, mesh=mesh,
                             description=f"cotgen distill ({cfg.mode})", callbacks=callbacks, primary=primary,
                             resuming=resuming,
                             wrap_batches=wrap)

    sharded = sft.sharded_arrays(student)
    rows = metrics.read(cfg.out / "metrics.jsonl")
    if primary:
        metrics.plot_loss(rows, cfg.out / "loss.png", title=f"{cfg.model} {cfg.mode} KD ({cfg.method})")
    state.update(
        status="done", final_step=trainer.train_steps, resumed_from=start,
        wall_s=round(time.perf_counter() - started, 1), **metrics.loss_summary(rows),
        last_kl=next((r["distill/kl"] for r in reversed(rows) if r["mode"] == "train" and "distill/kl" in r), None),
        checkpoint=str(cfg.out / "checkpoints" / str(trainer.train_steps)), sharded_arrays=sharded,
    )
    if primary:
        runs.write_state(cfg.out, state)
    return state
