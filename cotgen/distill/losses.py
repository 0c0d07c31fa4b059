"""Distillation losses as pure functions: `(loss, metrics)` over completion tokens only.

Every array is laid out by `labels`: (B, N) targets and mask, with logits (B, N, V) and stored top-k (B, N, k)
at the positions that predict them: the batch's `select` (N = K, `cotgen.train.data`), or positions 0..L-2 of a
(B, L) row (position t predicts token t + 1, counted when `mask[t + 1]` is set). `input_mask` marks the
completion and its end-of-turn, as in `cotgen.train.sft.loss_fn`, so prompts, padding and the seams between
packed examples weigh nothing, and every mean is over counted positions, not over the (B, L) grid as in
Tunix's `LogitStrategy`.

- `kd_full` (online): KL(p_T || q_T) over the whole vocabulary, p_T = softmax(teacher / T),
  q_T = softmax(student / T), times T^2 (Hinton et al., 2015) so gradients keep their scale across T.
- `kd_topk` (offline, stored top-k): the teacher's k stored log-probabilities renormalised over those k ids
  (p_hat_T = softmax(logprob_k / T), which equals the tempered teacher restricted to the k ids), against the
  student's *full-vocabulary* log-probabilities gathered at those ids:
  sum_k p_hat (log p_hat - log q_T[id_k]).
  This is Gemma 3's pre-training recipe (teacher zero outside the kept ids, renormalised; student
  cross-entropy over the whole vocabulary), and unlike Tunix's `distill_top_k` (which renormalises the student
  over the k ids too) it also pushes down the student's mass outside the teacher's top k: it equals
  KL(p_hat || q_T renormalised over the k ids) - log(q_T's mass on the k ids), >= 0 and zero only when the
  student puts all its mass on those ids in the teacher's proportions.
- Both blend with the SFT cross entropy: alpha * T^2 * KL + (1 - alpha) * CE.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _mask(labels):
    targets, mask = labels  # (B, N) each: the tokens predicted and whether each is trained on
    mask = mask.astype(jnp.float32)
    return targets, mask, jnp.maximum(jnp.sum(mask), 1.0)


def cross_entropy(student_logits, labels):
    """Mean next-token NLL of the student over counted positions (the SFT loss, also the eval loss)."""
    targets, mask, count = _mask(labels)
    logits = student_logits.astype(jnp.float32)  # (B, N, V)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # (B, N)
    return jnp.sum(nll * mask) / count


def kd_full(student_logits, teacher_logits, labels, *, temperature: float, alpha: float):
    targets, mask, count = _mask(labels)
    s = student_logits.astype(jnp.float32)  # (B, N, V)
    t = teacher_logits.astype(jnp.float32)  # (B, N, V)
    log_q = jax.nn.log_softmax(s / temperature, axis=-1)
    log_p = jax.nn.log_softmax(t / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)  # (B, L-1)
    kl = jnp.sum(kl * mask) / count
    ce = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(s, targets) * mask) / count
    teacher_ce = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(t, targets) * mask) / count
    loss = alpha * temperature**2 * kl + (1 - alpha) * ce
    return loss, {"distill/kl": kl, "distill/ce": ce, "distill/teacher_ce": teacher_ce}


def kd_topk(student_logits, top_ids, top_logprobs, labels, *, temperature: float, alpha: float):
    targets, mask, count = _mask(labels)
    s = student_logits.astype(jnp.float32)  # (B, N, V)
    ids = top_ids  # (B, N, k)
    log_p = jax.nn.log_softmax(top_logprobs.astype(jnp.float32) / temperature, axis=-1)  # (B, N, k)
    lse = jax.nn.logsumexp(s / temperature, axis=-1, keepdims=True)  # (B, N, 1)
    log_q = jnp.take_along_axis(s, ids, axis=-1) / temperature - lse  # (B, N, k)
    kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)  # (B, N)
    kl = jnp.sum(kl * mask) / count
    mass = jnp.sum(jnp.sum(jnp.exp(log_q), axis=-1) * mask) / count  # student's share on the teacher's top k
    ce = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(s, targets) * mask) / count
    loss = alpha * temperature**2 * kl + (1 - alpha) * ce
    return loss, {"distill/kl": kl, "distill/ce": ce, "distill/topk_mass": mass}


def labels(input_tokens, input_mask, select=None, select_mask=None, targets=None, **_):
    """(targets, mask): the batch's (B, K) `targets` and `select_mask` where it names its positions, else
    those of positions 0..L-2."""
    if select is not None:
        return targets, select_mask
    return input_tokens[:, 1:], input_mask[:, 1:]


def at_positions(values, select):
    """(B, L, ...) per-position values (stored top-k, a teacher's index) -> the rows `labels` counts: at
    `select` (B, K), or positions 0..L-2 without it."""
    if select is None:
        return values[:, :-1]
    return jnp.take_along_axis(values, select.reshape(select.shape + (1,) * (values.ndim - 2)), axis=1)
