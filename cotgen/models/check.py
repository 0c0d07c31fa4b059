"""`cotgen models check`: load a spec with Tunix and show that it works (config, vocabulary, greedy text)."""

from __future__ import annotations

import time
from typing import Iterator


def greedy(loaded, prompt: str, max_tokens: int) -> str:
    """Greedy continuation with Tunix's sampler (stops at `<eos>` / `<end_of_turn>`)."""
    from tunix.generate import sampler as sampler_lib

    # The sampler left-pads the prompt to `max_prompt_length` (else the next power of two) and needs that plus
    # the generated tokens in its cache.
    prompt_len = len(loaded.tokenizer.encode(prompt, add_bos=True)) + 1
    cache = sampler_lib.CacheConfig(cache_size=prompt_len + max_tokens + 8, num_layers=loaded.config.num_layers,
                                    num_kv_heads=loaded.config.num_kv_heads, head_dim=loaded.config.head_dim)
    sampler = sampler_lib.Sampler(loaded.model, loaded.tokenizer, cache)
    out = sampler([prompt], max_generation_steps=max_tokens, max_prompt_length=prompt_len, temperature=0.0,
                  echo=False, eos_tokens=list(loaded.tokenizer.stop_ids), seed=0)
    return out.text[0]


def describe(spec: str, prompt: str, max_tokens: int) -> Iterator[str]:
    from cotgen.models.load import load

    start = time.perf_counter()
    loaded = load(spec)
    cfg = loaded.config
    where = f", {loaded.source.path}" if loaded.source.path else ""
    yield f"model      {spec} ({loaded.family}, {loaded.source.kind}{where})"
    yield (f"config     {cfg.num_layers} layers, width {cfg.embed_dim}, {cfg.num_heads} heads "
           f"({cfg.num_kv_heads} kv), vocab {cfg.num_embed}, loaded in {time.perf_counter() - start:.1f}s")
    yield f"tokenizer  {loaded.tokenizer.vocab_size} pieces, stop ids {loaded.tokenizer.stop_ids}"
    start = time.perf_counter()
    text = greedy(loaded, prompt, max_tokens)
    yield f"greedy     {prompt!r} -> {text!r} ({time.perf_counter() - start:.1f}s)"
