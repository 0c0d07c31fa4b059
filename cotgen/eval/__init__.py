"""`cotgen eval`: reasoning accuracy the way the field reports it, under a pinned protocol.

    cli.py       Click options -> EvalConfig -> run.run, or --compare A B (imports nothing heavy)
    config.py    EvalConfig (frozen) and the defaults resolved from it (prompt style, exemplars, dtype)
    run.py       the stage: problems -> prompts -> greedy (+ k sampled) passes -> scored samples -> report
    engine.py    sampling through generate's backends (one vLLM engine for both passes)
    adapters.py  the filter stage's extractor, verifier and format check; the maj@k voting key
    records.py   SAMPLE_SCHEMA: one scored row per sample
    metrics.py   pass@k (unbiased), maj@k, rates, length percentiles, per-level/subject breakdowns
    compare.py   two runs paired over problems: bootstrap intervals, McNemar's exact test
    report.py    metrics.json, samples/problems Parquet, summary.md, PNG plots
"""
