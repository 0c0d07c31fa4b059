"""`cotgen generate`: sample chain-of-thought traces from a teacher, resumable and exactly once.

    cli.py             Click options -> GenerateConfig -> run.run (imports nothing heavy)
    config.py          GenerateConfig (frozen), the parameters that define an output, --shard parsing
    run.py             the stage: problems -> prompts -> pending (problem, sample) pairs -> chunks -> Parquet
    store.py           the output folder: chunks, manifests, the done set, `read_traces` for later stages

The engines (vllm, openai, tunix) and their configuration are `cotgen.engines`, shared with eval and distill.
"""
