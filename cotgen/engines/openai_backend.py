"""OpenAI-compatible backend: `/v1/completions` (the default) or `/v1/chat/completions` (`--api chat`) through the
`openai` AsyncOpenAI client, one request per sample.

Checklist:
- one request per (problem, sample index), `n=1` with the sample's own seed (request seed + index, as vLLM's
  child requests get): exact per-sample token counts from `usage`, per-sample retries, and a vLLM server gives
  the same streams as the offline engine. Servers with prefix caching compute a shared prompt once.
- the prompt is sent as rendered text (few-shot text, or a Gemma turn for chat style), with `stop` strings;
  when logprobs are asked for, `return_tokens_as_token_ids` (a vLLM extension) makes tokens come back as ids.
- `--api chat`: the prompt must be cotgen's chat style, one Gemma user turn plus the generation prompt
  (`prompts.gemma_chat`); its content goes out as `messages=[{"role": "user", ...}]` and the server's chat
  template renders the turn (a Gemma template renders the same text; markers are never sent twice). Same seed,
  n=1, stop, max_tokens, temperature, top_p; logprobs as `logprobs` + `top_logprobs`. Few-shot prompts are not
  one user message: refused before any work (`EngineConfig.check_api`); any other prompt that is not one user
  turn becomes an error row.
- bounded concurrency (`asyncio.Semaphore`); retries with exponential backoff and jitter on 429, 5xx,
  connection errors, timeouts and malformed answers; the client's own retries are off so ours are the only
  ones.
- a sample still failing after the retries becomes an error row (`Sample.error`); the chunk's finished
  samples are kept. Before any work the server is asked for its models: unreachable server or unknown model ->
  one line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random

from cotgen import prompts
from cotgen.engines.backend import Request, Sample, Sampling, error_samples
from cotgen.engines.config import EngineConfig
from cotgen.errors import CotgenError

log = logging.getLogger(__name__)

BACKOFF_S, BACKOFF_MAX_S = 1.0, 30.0
_USER, _MODEL = "<start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n"


class BadResponse(Exception):
    """The server answered 200 with something that is not a completion."""


class OpenAIBackend:
    name = "openai"

    def __init__(self, model: str, cfg: EngineConfig, sampling: Sampling):
        import openai

        self.model, self.cfg, self.sampling, self.startup_s = model, cfg, sampling, 0.0
        self.loop = asyncio.new_event_loop()
        key = os.environ.get(cfg.api_key_env) or "EMPTY"  # local servers accept any key
        self.client = openai.AsyncOpenAI(base_url=cfg.base_url, api_key=key, max_retries=0,
                                         timeout=cfg.request_timeout)
        self.retryable = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError,
                          openai.APITimeoutError, openai.APIResponseValidationError, json.JSONDecodeError,
                          BadResponse)
        try:
            self.loop.run_until_complete(self._check())
        except BaseException:
            self.close()
            raise

    async def _check(self) -> None:
        try:
            models = [m.id async for m in self.client.with_options(timeout=10).models.list()]
        except Exception as err:  # noqa: BLE001 - any failure here means the same thing to the user
            raise CotgenError(f"cannot reach an OpenAI-compatible server at {self.cfg.base_url} "
                              f"({type(err).__name__}: {err})") from None
        if models and self.model not in models:
            raise CotgenError(f"server {self.cfg.base_url} does not serve {self.model!r}; it serves: "
                              f"{', '.join(models)}")

    def generate(self, requests: list[Request]) -> list[Sample]:
        return self.loop.run_until_complete(self._chunk(requests))

    async def _chunk(self, requests: list[Request]) -> list[Sample]:
        gate = asyncio.Semaphore(self.cfg.concurrency)
        jobs = []
        for req in requests:
            messages = None
            if self.cfg.api == "chat":
                try:
                    messages = chat_messages(req.prompt)
                except CotgenError as err:
                    jobs += [_ready(sample) for sample in error_samples(req, str(err))]
                    continue
            jobs += [self._sample(gate, req, i, messages) for i in req.sample_indices]
        return list(await asyncio.gather(*jobs))

    async def _sample(self, gate: asyncio.Semaphore, req: Request, idx: int, messages: list[dict] | None) -> Sample:
        seed = req.seed + idx if self.sampling.seeded else None
        for attempt in range(self.cfg.max_retries + 1):
            try:
                async with gate:
                    if messages is None:
                        return await self._once(req, idx, seed)
                    return await self._chat(req, idx, seed, messages)
            except self.retryable as err:
                last = f"{type(err).__name__}: {err}"
            except Exception as err:  # noqa: BLE001 - 4xx and the like: not worth retrying, but not fatal
                return Sample(req.problem_id, idx, "", "error", 0, 0, seed, None,
                              f"{type(err).__name__}: {err}")
            if attempt < self.cfg.max_retries:
                delay = min(BACKOFF_MAX_S, BACKOFF_S * 2**attempt) * random.uniform(0.5, 1.0)
                log.debug("retrying %s/%d in %.1fs after %s", req.problem_id, idx, delay, last)
                await asyncio.sleep(delay)
        return Sample(req.problem_id, idx, "", "error", 0, 0, seed, None,
                      f"failed after {self.cfg.max_retries + 1} attempts: {last}")

    async def _once(self, req: Request, idx: int, seed: int) -> Sample:
        s = self.sampling
        extra = {"return_tokens_as_token_ids": True} if s.logprobs else None
        resp = await self.client.completions.create(
            model=self.model, prompt=req.prompt, n=1, seed=seed, temperature=s.temperature,
            top_p=s.top_p, max_tokens=s.max_tokens, stop=list(s.stop) or None, logprobs=s.logprobs or None,
            extra_body=extra)
        choice, text, usage = _finished(resp, lambda c: c.text, "completion")
        logprobs = _logprobs(choice.logprobs) if s.logprobs else None
        return Sample(req.problem_id, idx, text, choice.finish_reason, usage.prompt_tokens, usage.completion_tokens,
                      seed, logprobs)

    async def _chat(self, req: Request, idx: int, seed: int, messages: list[dict]) -> Sample:
        s = self.sampling
        optional = {"seed": seed, "stop": list(s.stop) or None, "logprobs": True if s.logprobs else None,
                    "top_logprobs": s.logprobs or None,
                    "extra_body": {"return_tokens_as_token_ids": True} if s.logprobs else None}
        resp = await self.client.chat.completions.create(  # unset options are left out, not sent as null
            model=self.model, messages=messages, n=1, temperature=s.temperature, top_p=s.top_p,
            max_tokens=s.max_tokens, **{k: v for k, v in optional.items() if v is not None})
        choice, text, usage = _finished(resp, lambda c: getattr(getattr(c, "message", None), "content", None),
                                        "assistant message")
        logprobs = _chat_logprobs(choice.logprobs) if s.logprobs else None
        return Sample(req.problem_id, idx, text, choice.finish_reason, usage.prompt_tokens, usage.completion_tokens,
                      seed, logprobs)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


def _finished(resp, text_of, what: str):
    """(first choice, its text, usage) of a finished answer (completions or chat: `text_of` reads the text);
    BadResponse, which is retried, for anything missing or a generation that did not finish."""
    choices = getattr(resp, "choices", None)
    text = text_of(choices[0]) if choices else None
    if not isinstance(text, str):
        raise BadResponse(f"no {what} in the answer: {str(resp)[:200]}")
    if resp.usage is None:
        raise BadResponse("no usage in the answer")
    if choices[0].finish_reason not in ("stop", "length"):
        raise BadResponse(f"finish_reason {choices[0].finish_reason!r}")
    return choices[0], text, resp.usage


async def _ready(sample: Sample) -> Sample:
    return sample


def chat_messages(prompt: str) -> list[dict]:
    """A chat-style prompt (one Gemma user turn plus the generation prompt, as `prompts.gemma_chat` renders it)
    -> the one user message it holds; CotgenError for any other prompt."""
    content = prompt[len(_USER):-len(_MODEL)] if prompt.startswith(_USER) and prompt.endswith(_MODEL) else None
    messages = [{"role": "user", "content": content}]
    if content is None or "<start_of_turn>" in content or prompts.gemma_chat(messages) != prompt:
        raise CotgenError("--api chat sends one user message, and this prompt is not one Gemma user turn "
                          f"(use --prompt-style chat): {prompt[:80]!r}")
    return messages


def _token_id(token: str) -> int:
    """vLLM's `token_id:123` form; -1 for servers that return token text."""
    return int(token[9:]) if token.startswith("token_id:") and token[9:].isdigit() else -1


def _chat_logprobs(lp) -> list[dict] | None:
    if lp is None or lp.content is None:
        return None
    entries = []
    for item in lp.content:
        ranked = sorted(item.top_logprobs or [], key=lambda t: -t.logprob)
        entries.append({"token_id": _token_id(item.token), "logprob": item.logprob,
                        "top_ids": [_token_id(t.token) for t in ranked], "top_logprobs": [t.logprob for t in ranked]})
    return entries


def _logprobs(lp) -> list[dict] | None:
    if lp is None or lp.tokens is None:
        return None
    tops = lp.top_logprobs or [None] * len(lp.tokens)
    entries = []
    for token, value, top in zip(lp.tokens, lp.token_logprobs, tops):
        ranked = sorted((top or {}).items(), key=lambda kv: -kv[1])
        entries.append({"token_id": _token_id(token), "logprob": value,
                        "top_ids": [_token_id(t) for t, _ in ranked], "top_logprobs": [v for _, v in ranked]})
    return entries
