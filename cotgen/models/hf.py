"""Tunix Gemma 3 / Gemma 2 parameters and configs under Hugging Face names: what `cotgen export` writes as
safetensors and `cotgen.models.tiny.hf_folder` writes for transformers and vLLM.

`to_hf` is the inverse of Tunix's loader mappings (tunix/models/gemma3/params_safetensors.py,
tunix/models/gemma/params_safetensors.py; the two name their parameters alike but for Gemma 2's
`post_attn_norm`): q/k/v/o einsum weights are reshaped back to (out, in) matrices, the MLP kernels transposed,
norm scales renamed (all store w of `x * (1 + w)`); tied embeddings, so no `lm_head`. `hf_config` writes the
matching `config.json` (`Gemma3ForCausalLM` / `Gemma2ForCausalLM`) from a Tunix ModelConfig.
"""

from __future__ import annotations

import numpy as np

from cotgen.errors import CotgenError

_NORMS = {"pre_attention_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
          "post_attn_norm": "post_attention_layernorm",  # Gemma 2's name for it
          "pre_ffw_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
          "attn._query_norm": "self_attn.q_norm", "attn._key_norm": "self_attn.k_norm"}
_MLP = {"gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "down_proj": "mlp.down_proj"}


def to_hf(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tunix Gemma 3 or Gemma 2 parameters (dotted paths) -> HF Gemma3ForCausalLM / Gemma2ForCausalLM tensors."""

    def proj(w):  # (n, D, H) -> (n*H, D)
        n, d, h = w.shape
        return w.transpose(1, 0, 2).reshape(d, n * h).T

    out = {}
    for key, w in params.items():
        if key == "embedder.input_embedding":
            out["model.embed_tokens.weight"] = w
            continue
        if key == "final_norm.scale":
            out["model.norm.weight"] = w
            continue
        parts = key.split(".")
        if parts[0] != "layers" or len(parts) < 4:
            raise CotgenError(f"cannot export parameter {key!r}: not part of a Gemma text model")
        hf = f"model.layers.{parts[1]}."
        rest = ".".join(parts[2:])
        module, _, leaf = rest.rpartition(".")
        if rest == "attn.q_einsum.w":
            out[hf + "self_attn.q_proj.weight"] = proj(w)
        elif rest == "attn.kv_einsum.w":  # (2, K, D, H)
            out[hf + "self_attn.k_proj.weight"], out[hf + "self_attn.v_proj.weight"] = proj(w[0]), proj(w[1])
        elif rest == "attn.qkv_einsum.w":  # (3, N, D, H), Tunix's layout when num_heads == num_kv_heads
            for name, part in zip("qkv", w):
                out[hf + f"self_attn.{name}_proj.weight"] = proj(part)
        elif rest == "attn.attn_vec_einsum.w":  # (N, H, D) -> (D, N*H)
            out[hf + "self_attn.o_proj.weight"] = w.reshape(-1, w.shape[-1]).T
        elif module.startswith("mlp.") and module[4:] in _MLP and leaf == "kernel":
            out[hf + _MLP[module[4:]] + ".weight"] = w.T
        elif module in _NORMS and leaf == "scale":
            out[hf + _NORMS[module] + ".weight"] = w
        else:
            raise CotgenError(f"cannot export parameter {key!r}: no Hugging Face name for it")
    return {k: np.ascontiguousarray(v) for k, v in out.items()}



def hf_config(config, dtype: str, eot_id: int | None, family: str = "gemma3", *,
              max_positions: int | None = None) -> dict:
    """A HF `config.json` for a Tunix Gemma 3 or Gemma 2 ModelConfig (used when the base has none)."""
    if family == "gemma2":
        return _hf_config_gemma2(config, dtype, eot_id, max_positions or 8192)
    from tunix.models.gemma3 import model as gemma3

    scalar = (config.head_dim if config.query_pre_attn_norm
              == gemma3.QueryPreAttentionNormalisation.BY_ONE_OVER_SQRT_HEAD_DIM
              else config.embed_dim // config.num_heads)
    layers = config.num_layers
    return {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "vocab_size": config.num_embed, "hidden_size": config.embed_dim,
        "intermediate_size": config.hidden_dim,
        "num_hidden_layers": layers, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads, "head_dim": config.head_dim,
        "query_pre_attn_scalar": scalar,
        "max_position_embeddings": max_positions or 32768, "rms_norm_eps": 1e-6,
        "rope_theta": float(config.global_base_frequency),
        "rope_local_base_freq": float(config.local_base_frequency),
        "rope_scaling": (None if config.global_scale_factor == 1.0
                         else {"rope_type": "linear", "factor": float(config.global_scale_factor)}),
        "sliding_window": config.sliding_window_size,
        "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
        "hidden_activation": "gelu_pytorch_tanh", "attention_bias": False, "attention_dropout": 0.0,
        "attn_logit_softcapping": None, "final_logit_softcapping": None, "tie_word_embeddings": True,
        "bos_token_id": 2, "eos_token_id": [1] if eot_id is None else [1, eot_id], "pad_token_id": 0,
        "torch_dtype": dtype,
    }


def _hf_config_gemma2(config, dtype: str, eot_id: int | None, max_positions: int) -> dict:
    from tunix.models.gemma import model as gemma

    return {
        "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
        "vocab_size": config.num_embed, "hidden_size": config.embed_dim, "intermediate_size": config.hidden_dim,
        "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads, "head_dim": config.head_dim,
        "query_pre_attn_scalar": config.head_dim,  # Tunix's Gemma 2 scales queries by head_dim ** -0.5
        "max_position_embeddings": max_positions, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "sliding_window": config.sliding_window_size,
        "layer_types": ["sliding_attention" if t == gemma.AttentionType.LOCAL_SLIDING else "full_attention"
                        for t in config.attention_types][:config.num_layers],
        "final_logit_softcapping": config.final_logit_softcap,
        "attn_logit_softcapping": config.attn_logits_soft_cap,
        "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh", "attention_bias": False,
        "attention_dropout": 0.0, "cache_implementation": "hybrid", "tie_word_embeddings": True,
        "bos_token_id": 2, "eos_token_id": [1] if eot_id is None else [1, eot_id], "pad_token_id": 0,
        "torch_dtype": dtype,
    }
