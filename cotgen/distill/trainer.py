"""The Tunix adapter: cotgen's logit strategies and a `DistillationTrainer` that keeps cotgen's batches whole.

- `MaskedLogitStrategy` is Tunix's `LogitStrategy` with cotgen's losses (`cotgen.distill.losses`): KL and
  cross entropy averaged over completion tokens only, logits cut to the shared vocabulary, and evaluation
  reporting the student's next-token NLL on the completion (the same number `cotgen train` reports as
  validation loss). `TopKStrategy` takes the teacher's stored top k instead of a teacher model.
- `Trainer` fixes two things in Tunix 0.1.7's `DistillationTrainer`: its `_prepare_inputs` rebuilds the batch
  as `TrainingInput(input_tokens, input_mask)`, dropping cotgen's `positions` and `segments` (packed rows need
  both), and it discards the strategy's metrics. Here the batch travels whole in a `KDInput`, the teacher's
  output is computed per training batch (online) or read from the batch (offline), and the strategy's
  `distill/*` metrics join the step's metrics.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from tunix.distillation import distillation_trainer
from tunix.distillation.strategies import logit
from tunix.sft import metrics_logger

from cotgen.distill import losses
from cotgen.train import sft

BATCH_KEYS = ("tokens", "loss_mask", "positions", "segments")
SELECT_KEYS = ("select", "select_mask", "targets")  # the positions decoded (`cotgen.train.data`)


def forward(vocab: int):
    def fn(model, input_tokens, input_mask, positions, attention_mask, select=None, **_):
        logits = sft.predicted_logits(model, input_tokens, positions, attention_mask, select)  # (B, N, rows)
        return logits[..., :vocab]
    return fn


class MaskedLogitStrategy(logit.LogitStrategy):
    """Full-vocabulary KD (online) with completion-token averaging."""

    def __init__(self, vocab: int, temperature: float, alpha: float):
        super().__init__(forward(vocab), forward(vocab), losses.labels, temperature=temperature, alpha=alpha)

    def compute_loss(self, student_output, teacher_output, labels):
        return losses.kd_full(student_output, teacher_output, labels, temperature=self.temperature,
                              alpha=self.alpha)

    def compute_eval_loss(self, student_output, labels):
        return losses.cross_entropy(student_output, labels), {}


class TopKStrategy(MaskedLogitStrategy):
    """KD against stored top-k teacher log-probabilities (offline); `teacher_output` is (ids, logprobs)."""

    def compute_loss(self, student_output, teacher_output, labels):
        top_ids, top_logprobs = teacher_output
        return losses.kd_topk(student_output, top_ids, top_logprobs, labels, temperature=self.temperature,
                              alpha=self.alpha)


def aligned(logits, end, targets):
    """The teacher's (B, N, V) logits, decoded at the teacher positions of the student's counted positions
    (`cotgen.distill.align`'s index, taken `at_positions`): where `end` (B, N) is set, the row becomes the data's
    next token (`targets`, (B, N)) with certainty."""
    certain = jnp.where(jax.nn.one_hot(targets, logits.shape[-1], dtype=bool), 0.0, -1e4).astype(logits.dtype)
    return jnp.where(jnp.asarray(end)[..., None], certain, logits)


@flax.struct.dataclass(frozen=True)
class KDInput:
    batch: dict  # cotgen's (B, L) arrays: tokens, loss_mask, positions, segments
    teacher_output: Any = None  # (B, L, V) teacher logits, or ((B, L, k) ids, (B, L, k) logprobs)


class Trainer(distillation_trainer.DistillationTrainer):
    def __init__(self, student, teacher, strategy, optimizer, training_config):
        super().__init__(student, teacher, strategy, optimizer, training_config)
        self.gen_model_input_fn = lambda x: {"inputs": sft.model_inputs(x.batch),
                                             "teacher_output": x.teacher_output}

    def _prepare_inputs(self, input_data: dict) -> KDInput:
        batch = {k: input_data[k] for k in (*BATCH_KEYS, *SELECT_KEYS) if k in input_data}
        if self._mode == metrics_logger.Mode.EVAL:
            return KDInput(batch, None)
        select = batch.get("select")
        if "top_ids" in input_data:  # stored per position: taken where the losses count
            return KDInput(batch, (losses.at_positions(jnp.asarray(input_data["top_ids"]), select),
                                   losses.at_positions(jnp.asarray(input_data["top_logprobs"]), select)))
        if "teacher_tokens" in input_data:  # the teacher reads its own prompts (cotgen.distill.align)
            teacher = sft.model_inputs({k: input_data[f"teacher_{k}"] for k in BATCH_KEYS})
            teacher["select"] = losses.at_positions(jnp.asarray(input_data["teacher_index"]), select)
            logits = self.strategy.get_teacher_outputs(self.teacher_model, teacher)
            targets, _ = losses.labels(batch["tokens"], batch["loss_mask"], select, batch.get("select_mask"),
                                       batch.get("targets"))
            return KDInput(batch, aligned(logits, losses.at_positions(jnp.asarray(input_data["teacher_end"]),
                                                                      select), targets))
        return KDInput(batch, self.strategy.get_teacher_outputs(self.teacher_model, sft.model_inputs(batch)))

    def _post_process_train_step(self, aux) -> None:
        buffer = self._buffered_train_metrics
        for name, value in (aux or {}).items():
            if name in buffer.additional_metrics:
                buffer.additional_metrics[name][0].append(value)
            else:
                buffer.additional_metrics[name] = ([value], np.mean)
