"""cotgen filter stage: raw teacher traces -> verified, curated SFT data (issue 4).

Verification is `cotgen.verify` (shared with eval, rl and sources).
quality.py   format, length, repetition, truncation and garbage filters
dedup.py     exact / near-duplicate fingerprints, n-gram decontamination
select.py    dedup + K per problem (shortest | diverse), pass rates
inputs.py    traces folder and problems; run.py the stage; report.py stats, summary, plots; cli.py, config.py

Importing this package imports nothing (cli.py stays light).
"""
