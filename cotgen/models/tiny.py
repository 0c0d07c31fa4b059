"""A tiny Gemma 3 and a tiny SentencePiece tokenizer for fast, hermetic tests.

The tokenizer is trained in-process (a second or so) on text rendered from cotgen's own prompt templates and
exemplars, with Gemma's special ids (pad 0, eos 1, bos 2, unk 3) and the turn and format markers as single pieces;
it is cached by content hash. The model is Tunix's Gemma 3 with 2 layers, width 64, randomly initialised by
`tunix.models.dummy_model_creator` (pitfall: `Gemma3(config, rngs=...)` zero-initialises MLPs and norms).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from cotgen import prompts
from cotgen.io import atomic_path
from cotgen.models.prepare import cache_dir

VOCAB_SIZE = 512
SPECIAL_PIECES = ["<start_of_turn>", "<end_of_turn>", "<reasoning>", "</reasoning>", "<answer>", "</answer>"]


def _corpus() -> str:
    lines = []
    for name in ("gsm8k", "math"):
        for shot in prompts.load_shots(name):
            lines += [shot["question"], shot["reasoning"], shot["answer"]]
    lines.append(prompts.student_prompt("What is 2 + 3?"))
    lines += [f"{a} + {b} = {a + b}. {a} * {b} = {a * b}." for a in range(40) for b in range(0, 40, 7)]
    return "\n".join(lines)


def tokenizer_path() -> Path:
    """Train (once) and return the tiny tokenizer's `tokenizer.model`."""
    import sentencepiece as spm

    corpus = _corpus()
    key = hashlib.sha256(f"{VOCAB_SIZE}{SPECIAL_PIECES}{corpus}".encode()).hexdigest()[:12]
    path = cache_dir() / "tiny" / f"tokenizer-{key}.model"
    if path.is_file():
        return path
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus.splitlines()), model_writer=model, vocab_size=VOCAB_SIZE, model_type="bpe",
        byte_fallback=True, split_digits=True, add_dummy_prefix=False, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=SPECIAL_PIECES, hard_vocab_limit=False, minloglevel=2,
        num_threads=min(2, os.cpu_count() or 1),
    )
    with atomic_path(path) as tmp:
        tmp.write_bytes(model.getvalue())
    return path


def model_config(vocab_size: int):
    """Tunix ModelConfig of the tiny Gemma 3 (float32 parameters)."""
    import jax.numpy as jnp
    from tunix.models.gemma3 import model as gemma3

    return gemma3.ModelConfig(
        num_layers=2, num_embed=vocab_size, embed_dim=64, hidden_dim=128, num_heads=2, head_dim=32,
        num_kv_heads=1, sliding_window_size=16, local_base_frequency=10_000, global_base_frequency=1_000_000,
        param_dtype=jnp.float32,
    )
