"""`cotgen train`: supervised fine-tuning of a Gemma 3 student with Tunix's PeftTrainer.

The checklist, in order:
1. Cheap checks before any compute: the data's schema, the output folder (`cotgen.runs.check_out`: a folder
   holding another run is refused; `--resume` needs the same config and the same data, by content fingerprint).
2. Devices: `jax.distributed.initialize()` when asked (multi-host TPU slices, SLURM: it reads the topology from
   the environment), then a mesh from `--mesh fsdp=F,tp=T` with Auto axis types (jax 0.10 defaults to Explicit,
   which breaks Gemma's embedding gather). Batches are split over `fsdp`; weights follow Tunix's Gemma 3
   sharding.
3. The model through `cotgen.models.load` (every spec the resolver knows), LoRA/QLoRA through qwix
   (`cotgen.models.lora`).
4. Tokenize, plan every step's rows (shuffled by seed and epoch, packed), report the real-token share with and
   without packing.
5. Tunix `PeftTrainer`: AdamW (decay on matrices only) under global-norm clipping, linear warmup then cosine
   decay; cotgen's loss (token-level cross entropy over completion tokens, integer labels, no one-hot over the
   262k vocabulary); `positions` and a per-example causal (B, L, L) mask built inside the jitted step. Orbax
   checkpoints every `save_every` steps and at the end, under OUT/checkpoints; on restart Tunix restores the
   latest one and skips the batches already trained, so the resumed run ends at the same weights as an
   uninterrupted one.
6. Metrics to OUT/metrics.jsonl and OUT/tensorboard, a progress bar on a terminal, OUT/loss.png, OUT/run.json.

Multi-host (TPU pod slices, SLURM): run the same command on every host with `--distributed` and a `--mesh`
covering every device. `--out` must be a folder all hosts see: process 0 checks and writes the run's files, orbax
writes the checkpoints collectively, and each process feeds its own rows of every batch (`--batch-size` must be
a multiple of the process count). Only the single-host path is exercised here (one CPU host, devices faked with
XLA_FLAGS=--xla_force_host_platform_device_count=N).
"""

from __future__ import annotations

import logging
import time

from cotgen import __version__, runs
from cotgen.config import write_resolved
from cotgen.errors import CotgenError
from cotgen.models.tokenizer import END_OF_TURN
from cotgen.train import data
from cotgen.train.config import TrainConfig, parse_mesh

log = logging.getLogger("cotgen.train")


# ---------------------------------------------------------------------------------------------------- pieces
def make_mesh(spec: str | None):
    """A ("fsdp", "tp") mesh with Auto axes, or None for one device."""
    if spec is None:
        return None
    import jax
    from jax.sharding import AxisType

    sizes = parse_mesh(spec)
    need = sizes["fsdp"] * sizes["tp"]
    if need > jax.device_count():
        raise CotgenError(f"--mesh {spec} needs {need} devices; {jax.device_count()} visible "
                          "(on CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N)")
    return jax.make_mesh((sizes["fsdp"], sizes["tp"]), ("fsdp", "tp"), axis_types=(AxisType.Auto,) * 2)


def schedule(cfg: TrainConfig, total: int):
    """Learning rate at step s (0-based): linear warmup to lr, then cosine to lr * min_lr_ratio."""
    import jax.numpy as jnp

    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(0.03 * total)
    warmup = min(warmup, max(total - 1, 0))
    decay = max(total - warmup, 1)

    def lr(step):
        step = jnp.asarray(step, jnp.float32)
        warm = cfg.lr * (step + 1) / max(warmup, 1)
        progress = jnp.clip((step - warmup) / decay, 0.0, 1.0)
        cosine = cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + jnp.cos(jnp.pi * progress)))
        return jnp.where(step < warmup, warm, cosine)

    return lr


def optimizer(cfg: TrainConfig, lr):
    import jax
    import optax

    def make(learning_rate):
        return optax.chain(
            optax.clip_by_global_norm(cfg.max_grad_norm),
            optax.adamw(learning_rate, weight_decay=cfg.weight_decay,
                        mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)),
        )

    # inject_hyperparams outermost: Tunix reads opt_state.hyperparams["learning_rate"] for its own logging.
    return optax.inject_hyperparams(make)(learning_rate=lr)


def predicted_logits(model, input_tokens, positions, attention_mask, select=None):
    """The logits that predict the targets: at the (B, K) positions `select` (`cotgen.train.data`), or, without
    it, at positions 0..L-2 of a full forward pass. With `select` only K positions are decoded: the model's
    final-norm output (its `all_hidden_states` sow, the hidden states its own decode reads) is gathered and
    decoded here, Gemma 2's final soft-cap included; the model's full logits go unused and XLA drops them."""
    import jax.numpy as jnp
    from flax import nnx

    if select is None:
        logits, _ = model(input_tokens, positions, None, attention_mask)  # (B, L, V)
        return logits[:, :-1]
    model(input_tokens, positions, None, attention_mask, output_hidden_states=True)
    hidden = nnx.pop(model, nnx.Intermediate)["all_hidden_states"].value[-1]  # (B, L, D)
    logits = model.embedder.decode(jnp.take_along_axis(hidden, select[..., None], axis=1))  # (B, K, V)
    cap = getattr(model, "final_logits_softcap", None)  # Gemma 2: 30.0; Gemma 3 has none
    if cap is not None:
        logits = jnp.tanh(logits / cap) * cap
    return logits


def loss_fn(model, input_tokens, input_mask, positions, attention_mask, select=None, select_mask=None,
            targets=None):
    """Mean cross entropy of the tokens marked in `input_mask` (completion and end-of-turn), decoded at
    `select` only when the batch names them."""
    import jax.numpy as jnp
    import optax

    logits = predicted_logits(model, input_tokens, positions, attention_mask, select).astype(jnp.float32)
    if select is None:
        targets, select_mask = input_tokens[:, 1:], input_mask[:, 1:]  # (B, L-1)
    mask = select_mask.astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def segment_mask(segments):
    """(B, L) segment ids -> (B, L, L) causal mask within each example; padding (0) attends to nothing."""
    import jax.numpy as jnp

    length = segments.shape[-1]
    same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, None, :] > 0)
    return same & jnp.tril(jnp.ones((length, length), dtype=jnp.bool_))[None]


def model_inputs(batch):
    """A cotgen batch -> the keyword arguments of `loss_fn` (runs inside the jitted step)."""
    inputs = {"input_tokens": batch["tokens"], "input_mask": batch["loss_mask"],
              "positions": batch["positions"], "attention_mask": segment_mask(batch["segments"])}
    if "select" in batch:
        inputs.update(select=batch["select"], select_mask=batch["select_mask"], targets=batch["targets"])
    return inputs


# ---------------------------------------------------------------------------------------------------- run
def run(cfg: TrainConfig, *, callbacks=()) -> dict:
    """Train; return the run summary (also written to OUT/run.json). `callbacks`: extra `fn(trainer, step)`
    called after each step (tests use one to kill the process mid-run)."""
    train_path, val_path = data.find_files(cfg.data)
    train_ex = data.read_examples(train_path)
    val_ex = data.read_examples(val_path) if val_path else None
    fingerprint = data.fingerprint(train_ex, val_ex)
    if cfg.distributed:  # before any other JAX call; it reads the hosts' topology from the environment
        import jax

        jax.distributed.initialize()
    primary = not cfg.distributed or jax.process_index() == 0
    if primary:  # process 0 owns the run folder's bookkeeping (orbax coordinates the checkpoints itself)
        runs.check_out(cfg, fingerprint, "train")
    resuming = (cfg.out / "config.toml").is_file()

    import jax
    from tunix.sft import peft_trainer

    from cotgen.models import lora
    from cotgen.models.load import load
    from cotgen.train import metrics

    mesh = make_mesh(cfg.mesh)
    started = time.perf_counter()
    loaded = load(cfg.model, dtype=cfg.dtype, mesh=mesh)
    tokenizer = loaded.tokenizer
    eot = tokenizer.piece_to_id(END_OF_TURN)
    if eot is None:
        raise CotgenError(f"{cfg.model}: the tokenizer has no {END_OF_TURN} piece to end the student's turn")

    process = (jax.process_index(), jax.process_count())
    tok = data.tokenize(train_ex, tokenizer, eot, cfg.max_len)
    shape = dict(batch_size=cfg.batch_size, max_len=cfg.max_len, seed=cfg.seed, window=cfg.pack_window,
                 steps=cfg.steps, epochs=cfg.epochs)
    plan = data.plan(tok.lengths, packing=cfg.packing, **shape)
    fill = {name: data.fill(data.plan(tok.lengths, packing=on, **shape), tok, cfg.batch_size, cfg.max_len)
            for name, on in (("packed", True), ("unpacked", False))}
    val_batches = data.validation_batches(val_ex, tokenizer, eot, cfg, process)
    log.info("%d train examples (%d cut at %d tokens, %d dropped), %d steps = %.2f epochs; real tokens per "
             "batch: %.1f%% packed, %.1f%% unpacked", len(tok.ids), tok.n_truncated, cfg.max_len,
             tok.n_dropped, plan.steps, plan.epochs, 100 * fill["packed"]["real_token_fraction"],
             100 * fill["unpacked"]["real_token_fraction"])

    if primary:
        cfg.out.mkdir(parents=True, exist_ok=True)
        write_resolved(cfg, cfg.out, "train")
    state = {
        "status": "running", "cotgen_version": __version__, "model": cfg.model, "method": cfg.method,
        "model_source": {"kind": loaded.source.kind, "path": str(loaded.source.path or "")},
        "data_files": [str(train_path), *([str(val_path)] if val_path else [])],
        "data_fingerprint": fingerprint,
        "examples": {"train": len(tok.ids), "truncated": tok.n_truncated, "dropped": tok.n_dropped,
                     "validation": len(val_ex) if val_ex else 0},
        "steps": plan.steps, "epochs": plan.epochs, "end_of_turn_id": int(eot), "fill": fill,
        "devices": [str(d) for d in jax.devices()], "mesh": cfg.mesh, "processes": process[1],
    }
    if primary:
        runs.write_state(cfg.out, state)

    model = lora.adapt(loaded.model, cfg, mesh=mesh)

    def make_trainer(optimizer_, training_config):
        trainer = peft_trainer.PeftTrainer(model, optimizer_, training_config)
        return trainer.with_gen_model_input_fn(model_inputs).with_loss_fn(loss_fn)

    trainer, start = fit(cfg, make_trainer, peft_trainer.TrainingConfig, plan=plan, tok=tok,
                         pad_id=tokenizer.pad_id(), process=process, val_batches=val_batches, mesh=mesh,
                         description=f"cotgen train ({cfg.method})", callbacks=callbacks, primary=primary,
                         resuming=resuming)
    sharded = sharded_arrays(model)

    rows = metrics.read(cfg.out / "metrics.jsonl")
    if primary:
        metrics.plot_loss(rows, cfg.out / "loss.png", title=f"{cfg.model} {cfg.method} SFT")
    state.update(
        status="done", final_step=trainer.train_steps, resumed_from=start,
        wall_s=round(time.perf_counter() - started, 1), **metrics.loss_summary(rows),
        checkpoint=str(cfg.out / "checkpoints" / str(trainer.train_steps)),
        sharded_arrays=sharded,
    )
    if primary:
        runs.write_state(cfg.out, state)
    return state


def sharded_arrays(model) -> int:
    """How many of the model's arrays are split over the mesh (not fully replicated), for run.json."""
    import jax
    from flax import nnx

    return sum(not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(nnx.state(model)))


def fit(cfg: TrainConfig, make_trainer, config_cls, *, plan, tok, pad_id: int, process, val_batches, mesh,
        description: str, callbacks=(), primary: bool = True, resuming: bool = False, wrap_batches=None):
    """The training loop `train` and `distill` share: metrics backends (JSONL, TensorBoard) through Tunix's
    MetricsLogger, orbax checkpoints every `save_every` steps, the schedule and optimizer, resume from the
    latest checkpoint (skipping the batches already trained, truncating metrics past it), the step hook.
    `make_trainer(optimizer, training_config)` builds the Tunix trainer (`config_cls` is its TrainingConfig
    class); `wrap_batches(batches)` may add fields to each batch. Returns (trainer, step resumed from)."""
    import contextlib

    import orbax.checkpoint as ocp
    from tunix.sft import metrics_logger as tunix_metrics

    from cotgen.train import metrics

    lr = schedule(cfg, plan.steps)
    backends = []

    def factory(make):
        def create():
            backends.append(make())
            return backends[-1]
        return create

    factories = [factory(lambda: metrics.JsonlBackend(cfg.out / "metrics.jsonl"))]
    if cfg.tensorboard:
        factories.append(factory(lambda: metrics.TensorboardBackend(cfg.out / "tensorboard")))
    training_config = config_cls(
        eval_every_n_steps=cfg.eval_every,
        max_steps=plan.steps,
        checkpoint_root_directory=str((cfg.out / "checkpoints").resolve()),
        checkpointing_options=ocp.CheckpointManagerOptions(save_interval_steps=cfg.save_every,
                                                           max_to_keep=cfg.keep_checkpoints),
        metrics_logging_options=tunix_metrics.MetricsLoggerOptions(
            log_dir=str(cfg.out / "tensorboard"), backend_kwargs={"custom_backend": factories}),
        metrics_prefix=metrics.PREFIX,
        pbar_description=description,
    )
    context = mesh if mesh is not None else contextlib.nullcontext()
    try:
        with context:
            trainer = make_trainer(optimizer(cfg, lr), training_config)
            start = trainer.train_steps
            if primary:
                metrics.truncate(cfg.out / "metrics.jsonl", start)
            if start:
                log.info("resuming from the checkpoint at step %d of %d", start, plan.steps)
            elif resuming:
                log.info("--resume: no checkpoint yet in %s, starting from step 0", cfg.out)
            batches = data.Batches(plan, tok, cfg.batch_size, cfg.max_len, start=trainer.iter_steps,
                                   pad_id=pad_id, process=process)
            trainer.with_training_hooks(metrics.StepHook(
                schedule=lr, step_tokens=lambda s: data.batch_tokens(plan.batches[s], tok),
                step_time=batches.step_time, total=plan.steps, log_every=cfg.log_every, callbacks=callbacks,
                flush=lambda: [b.flush() for b in backends if isinstance(b, metrics.JsonlBackend)]))
            trainer.train(wrap_batches(batches) if wrap_batches else batches, val_batches)
    finally:
        metrics.unregister(backends)
        for backend in backends:  # already closed unless training raised
            backend.close()
    return trainer, start
