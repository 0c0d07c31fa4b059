"""Tunix backend: the model in JAX (`cotgen.models.load`) sampled with Tunix's `Sampler`.

For TPUs without vLLM and for tiny, hermetic CPU tests. Checklist:
- every call has the same shapes, so JAX compiles once: a fixed batch (`batch_size` problems x `n`
  sequences, the last call padded with repeats that are thrown away) and a fixed padded prompt length (`plan`
  sees every prompt of the run first: the longest, rounded up to a power of two).
- temperature 0 is greedy; otherwise Tunix's top-p mode (Tunix samples greedily unless top_p or top_k is
  given).
- one seed per sampler call (Tunix seeds the batch, not the sequence; pitfall 9: pass a fresh one every
  call), derived from the run seed and the call's first (problem_id, sample_idx), and recorded on each of its
  samples.
- stop: `<eos>` and `<end_of_turn>` as eos tokens; Tunix cannot stop on strings, so few-shot completions are
  cut at the first stop string afterwards and their token count (and logprobs) re-counted from the cut text.
- memory: the prefill materialises [batch, padded prompt, vocab] f32 logits (pitfall 13): for the 270M with
  8-shot prompts (1,024 padded) keep batch x n near 8 (~8.6 GB); the default batch is max(1, 8 // n) problems.
- logprobs: the sampled token's logprob only (top-k would need the full logits).
"""

from __future__ import annotations

import time

from cotgen.engines.backend import Request, Sample, Sampling, default_batch, request_seed
from cotgen.engines.config import EngineConfig
from cotgen.prompts import truncate_at_stop


def _pow2(x: int) -> int:
    return 1 << max(0, x - 1).bit_length()


class TunixBackend:
    name = "tunix"

    def __init__(self, model: str, cfg: EngineConfig, sampling: Sampling):
        from cotgen.models.load import load

        start = time.perf_counter()
        self.sampling = sampling
        self.loaded = load(model, dtype=cfg.dtype or "float32")
        self.tok = self.loaded.tokenizer
        self.width = (cfg.batch_size or default_batch(cfg.backend, sampling.n)) * sampling.n  # sequences per call
        self.sampler, self.prompt_cap = None, 0
        self.startup_s = time.perf_counter() - start

    def plan(self, requests: list[Request]) -> None:
        """Size the padded prompt for the longest prompt of the whole run, so JAX compiles once."""
        if requests:
            self._sampler(max(len(self.tok.encode(r.prompt, add_bos=True)) for r in requests))

    def _sampler(self, longest: int):
        if self.sampler is None or longest > self.prompt_cap:
            from tunix.generate import sampler as sampler_lib

            self.prompt_cap = _pow2(longest)
            c = self.loaded.config
            cache = sampler_lib.CacheConfig(cache_size=self.prompt_cap + self.sampling.max_tokens,
                                            num_layers=c.num_layers, num_kv_heads=c.num_kv_heads,
                                            head_dim=c.head_dim)
            self.sampler = sampler_lib.Sampler(self.loaded.model, self.tok, cache)
        return self.sampler

    def generate(self, requests: list[Request]) -> list[Sample]:
        seqs = [(req, i) for req in requests for i in req.sample_indices]
        samples: list[Sample] = []
        for at in range(0, len(seqs), self.width):
            samples += self._call(seqs[at:at + self.width])
        return samples

    def _call(self, seqs: list[tuple[Request, int]]) -> list[Sample]:
        s = self.sampling
        prompt_ids = {req.problem_id: len(self.tok.encode(req.prompt, add_bos=True)) for req, _ in seqs}
        sampler = self._sampler(max(prompt_ids.values()))
        padded = seqs + [seqs[-1]] * (self.width - len(seqs))
        seed = request_seed(s.seed, f"{seqs[0][0].problem_id}/{seqs[0][1]}")
        out = sampler([req.prompt for req, _ in padded], max_generation_steps=s.max_tokens,
                      max_prompt_length=self.prompt_cap, echo=False, return_logprobs=bool(s.logprobs),
                      eos_tokens=list(s.stop_token_ids), temperature=s.temperature,
                      top_p=s.top_p if s.temperature > 0 else None, seed=seed)
        samples = []
        for j, (req, idx) in enumerate(seqs):
            tokens = [int(t) for t in out.tokens[j]]
            text = self.tok.decode(tokens)
            finish = "stop" if len(tokens) < s.max_tokens else "length"
            cut = truncate_at_stop(text, s.stop) if s.stop else text
            if cut != text:
                text, finish = cut, "stop"
                tokens = tokens[:len(self.tok.encode(cut))]
            logprobs = None
            if s.logprobs:
                logprobs = [{"token_id": t, "logprob": float(v), "top_ids": [], "top_logprobs": []}
                            for t, v in zip(tokens, out.logprobs[j])]
            samples.append(Sample(req.problem_id, idx, text, finish, prompt_ids[req.problem_id], len(tokens),
                                  seed, logprobs))
        return samples

    def close(self) -> None:
        self.sampler = self.loaded = None
