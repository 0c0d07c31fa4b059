"""`cotgen run RECIPE.toml`: one recipe from problems to a better model, with the proof that it is better.

A recipe is one TOML file whose tables are the stages' own `--config` tables (`[generate]`, `[filter]`,
`[train]`, `[rl]`, `[eval]`: the same keys as each stage's config dataclass), plus `[run]` (the run folder,
data folder, goal), `[problems]` (an optional generated problem set), `[export]` and `[target]` (the hardware
the dry-run estimates for). The runner fills every path between stages, so one run folder holds every artifact:

    problems/  traces/  data/  sft/  sft-model/  rl/  rl-model/  eval-base/  eval-final/
    recipe/    (each stage's --config input and its record)   logs/  (each stage's output)
    report.md  report.json  report.png

Modules: `plan.py` parses the recipe and wires the stages; `runner.py` runs them (each stage a
`python -m cotgen.cli STAGE --config ...` subprocess, so vLLM's and JAX's memory is returned between stages) and
decides skip / resume / refuse from each stage's record; `report.py` compares the base and the trained student
(`cotgen eval --compare`: paired bootstrap and McNemar); `dryrun.py` and `estimate.py` check a recipe without
loading weights; `problems.py` writes generated reasoning-gym problem sets.
"""
