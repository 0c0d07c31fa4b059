"""Tiny Gemma 3 and Gemma 2 models and a tiny SentencePiece tokenizer for fast, hermetic tests.

The tokenizer is trained in-process (a second or so) on text rendered from cotgen's own prompt templates and
exemplars, with Gemma's special ids (pad 0, eos 1, bos 2, unk 3) and the turn and format markers as single pieces;
it is cached by content hash. Both families share it (the real families' turn-marker ids differ anyway: Gemma 2's
`<end_of_turn>` is 107, Gemma 3's 106; `check_vocabulary` checks those only for full-size embeddings). The models
are Tunix's Gemma 3 (`tiny`) and Gemma 2 (`tiny-gemma2`) with 2 layers, width 64, randomly initialised by
`tunix.models.dummy_model_creator` (pitfall: `Gemma3(config, rngs=...)` zero-initialises MLPs and norms). The
tiny Gemma 2 has grouped-query attention (4 heads, 2 KV heads) and soft-capping limits scaled down to its small
random logits, so a mapping that forgets either shows in its logits.

`hf_folder(spec)` writes a tiny model, weights exactly as `load(spec)` has them, as a cached Hugging Face
folder (config.json, model.safetensors, tokenizer.model/.json) for transformers and vLLM.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from cotgen import prompts
from cotgen.errors import CotgenError
from cotgen.io import atomic_dir, atomic_path
from cotgen.models.prepare import cache_dir

HF_FOLDER_VERSION = 1  # bump when hf_folder's output changes
MAX_POSITIONS = 2048  # config.json max_position_embeddings of hf_folder (vLLM's default max_model_len)
SHAPES = dict(num_layers=2, embed_dim=64, hidden_dim=128)
GEMMA3 = dict(num_heads=2, head_dim=32, num_kv_heads=1, sliding_window_size=16, local_base_frequency=10_000,
              global_base_frequency=1_000_000)
GEMMA2 = dict(num_heads=4, head_dim=32, num_kv_heads=2, sliding_window_size=16, final_logit_softcap=0.5,
              attn_logits_soft_cap=0.5, use_post_attn_norm=True, use_post_ffw_norm=True)
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


def model_config(vocab_size: int, family: str = "gemma3", *, dtype=None):
    """Tunix ModelConfig of the tiny Gemma 3 or Gemma 2 (float32 parameters unless `dtype`)."""
    import jax.numpy as jnp

    if family == "gemma2":
        from tunix.models.gemma import model as gemma

        kinds = (gemma.AttentionType.LOCAL_SLIDING, gemma.AttentionType.GLOBAL)  # Gemma 2's alternation
        return gemma.ModelConfig(**SHAPES, **GEMMA2, num_embed=vocab_size,
                                 attention_types=kinds * (SHAPES["num_layers"] // 2))
    from tunix.models.gemma3 import model as gemma3

    return gemma3.ModelConfig(**SHAPES, **GEMMA3, num_embed=vocab_size, param_dtype=dtype or jnp.float32)


def hf_folder(spec: str = "tiny") -> Path:
    """The tiny model `spec` (`tiny[:SEED]`, `tiny-gemma2[:SEED]`) as a Hugging Face folder, written once under
    cache_dir()/tiny/: float32 weights identical to `cotgen.models.load.load(spec)`'s (same seed), config.json
    (Gemma3ForCausalLM / Gemma2ForCausalLM), tokenizer.model, tokenizer.json and tokenizer_config.json."""
    import json

    from cotgen.models import resolve, source_family

    source = resolve(spec)
    if source.kind != "tiny":
        raise CotgenError(f"hf_folder({spec!r}): expected tiny[:SEED] or tiny-gemma2[:SEED]")
    family = source_family(source)
    tok = tokenizer_path()
    shapes = {**SHAPES, **(GEMMA2 if family == "gemma2" else GEMMA3)}
    key = hashlib.sha256(f"{HF_FOLDER_VERSION}{family}{source.seed}{tok.name}{sorted(shapes.items())}"
                         .encode()).hexdigest()[:12]
    folder = cache_dir() / "tiny" / f"hf-{family}-{source.seed}-{key}"
    if (folder / "model.safetensors").is_file():
        return folder
    import shutil

    from safetensors.numpy import save_file

    from cotgen.models.hf import hf_config, to_hf
    from cotgen.models.load import load
    from cotgen.models.lora import flat_params
    from cotgen.models.prepare import write_hf_tokenizer

    loaded = load(source)
    eot = loaded.tokenizer.piece_to_id("<end_of_turn>")
    config = hf_config(loaded.config, "float32", eot, family, max_positions=MAX_POSITIONS)
    with atomic_dir(folder) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(to_hf(flat_params(loaded.model)), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        shutil.copy(tok, tmp / "tokenizer.model")
        write_hf_tokenizer(tmp)
    return folder
