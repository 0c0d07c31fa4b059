"""cotgen filter stage: raw teacher traces -> verified, curated SFT data (issue 4).

extract.py   answer extraction ladder (<answer>, \\boxed{}, ####, "the answer is", "final answer", last number)
numeric.py   Polars numeric verification (exact rationals; most GSM8K rows, no Python per row)
symbolic.py  math-verify check run inside sandbox workers (LaTeX only, own timer)
sandbox.py   worker processes with hard per-item time and memory limits; the input screen
verify.py    THE verifier for filter, RL rewards and eval: verify(), score_completions(), Verifier
quality.py   format, length, repetition, truncation and garbage filters
dedup.py     exact / near-duplicate fingerprints, n-gram decontamination
select.py    dedup + K per problem (shortest | diverse), pass rates
inputs.py    traces folder and problems; run.py the stage; report.py stats, summary, plots; cli.py, config.py

Importing this package imports nothing (sources.py imports extract.py; cli.py stays light).
"""
