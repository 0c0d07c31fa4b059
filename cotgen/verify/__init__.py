"""cotgen.verify: the answer verifier every stage uses (filter keeps, eval scores, rl rewards, sources' golds).

extract.py   answer extraction ladder (<answer>, \\boxed{}, ####, "the answer is", "final answer", last number)
numeric.py   Polars numeric verification (exact rationals; most GSM8K rows, no Python per row)
symbolic.py  math-verify check run inside sandbox workers (LaTeX only, own timer)
sandbox.py   worker processes with hard per-item time and memory limits; the input screen
verifier.py  THE verifier: verify(), score_completions(), Verifier

Importing this package imports nothing (cotgen.sources imports extract.py; the command line stays light).
"""
