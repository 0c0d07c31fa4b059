"""`[problems]`: a reasoning-gym problem set with its own task configuration, written as train and test JSONL.

`rg:TASK` sources take reasoning-gym's default configuration, which for the arithmetic tasks means up to six
terms of up to four digits: far past what the 270M gets right. A recipe can set the task's own knobs instead:

    [problems]
    task = "chain_sum"                                      # a reasoning-gym task
    config = { min_terms = 2, max_terms = 3, max_digits = 2 }  # its config dataclass' fields
    train = 2000                                            # problems in train.jsonl
    test = 200                                              # held-out problems in test.jsonl
    seed = 0
    transfer = { min_terms = 4, max_terms = 4 }            # optional: a harder held-out split (config overrides)
    transfer_size = 200                                     # its problems (default: test)

Train uses `seed`, test `seed + 1_000_003` (as rg: sources do; both draw through `cotgen.sources.rg_problems`);
repeated questions are dropped, and test questions that also occur in train are skipped (test takes the first
`test` new ones of 4 x `test` draws), so the held-out set never overlaps the training problems. Either file can
hold fewer rows than asked when the task's configuration allows few distinct problems. Files: OUT/problems/
`rg-TASK-train.jsonl` and `rg-TASK-test.jsonl` ({question, answer}); the stages read them as file sources.

`transfer` (seed + 2 x 1_000_003, disjoint from train as test is) is a variant of the task past anything trained
on: more terms or more digits. An eval phase reads it with `split = "transfer"` (`[eval.transfer]`), so the
report shows whether what the student learned carries over. File: `rg-TASK-transfer.jsonl`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cotgen.errors import CotgenError, InputError

KEYS = {"task", "config", "train", "test", "seed", "transfer", "transfer_size"}


def check(table: dict[str, Any], recipe: Path) -> dict[str, Any]:
    for key in table:
        if key not in KEYS:
            raise InputError(recipe, f"unknown key in [problems] (known: {', '.join(sorted(KEYS))})", field=key)
    if not isinstance(table.get("task"), str):
        raise InputError(recipe, "[problems] needs task = \"REASONING_GYM_TASK\"", field="task")
    spec = {"task": table["task"], "config": dict(table.get("config", {})), "train": int(table.get("train", 1000)),
            "test": int(table.get("test", 200)), "seed": int(table.get("seed", 0))}
    if spec["train"] < 1 or spec["test"] < 1:
        raise InputError(recipe, "[problems] train and test must be >= 1")
    if "transfer" in table:
        if not isinstance(table["transfer"], dict):
            raise InputError(recipe, "must be a table of the task's config overrides, e.g. { max_terms = 4 }",
                             field="problems.transfer")
        spec["transfer"] = {**spec["config"], **table["transfer"]}
        spec["transfer_size"] = int(table.get("transfer_size", spec["test"]))
        if spec["transfer_size"] < 1:
            raise InputError(recipe, "must be >= 1", field="problems.transfer_size")
    elif "transfer_size" in table:
        raise InputError(recipe, "transfer_size needs a transfer table", field="problems.transfer_size")
    return spec


def splits(spec: dict[str, Any]) -> tuple[str, ...]:
    return ("train", "test", "transfer") if "transfer" in spec else ("train", "test")


def file_name(spec: dict[str, Any], split: str) -> str:
    return f"rg-{spec['task']}-{split}.jsonl"


def build(spec: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """{"train": [...], "test": [...] (, "transfer": [...])} rows of {question, answer}; repeated questions
    dropped, test and transfer disjoint from train."""
    from cotgen.sources import RG_TEST_SEED_OFFSET, rg_problems

    def entries(size: int, seed: int, config=None) -> list[dict[str, str]]:
        try:
            items = rg_problems(spec["task"], size, seed, spec["config"] if config is None else config)
        except CotgenError as err:
            raise CotgenError(f"[problems] {err}") from None
        return [{"question": e["question"], "answer": e["answer"]} for e in items if e["answer"] is not None]

    train = entries(spec["train"], spec["seed"])
    taken = {r["question"] for r in train}
    # draw 4x as many test items as asked (a small task's test draws often repeat train questions), keep the
    # first `test` that are new
    drawn = entries(4 * spec["test"], spec["seed"] + RG_TEST_SEED_OFFSET)
    test = [r for r in drawn if r["question"] not in taken][:spec["test"]]
    if not test:
        raise CotgenError(f"[problems] every test question of {spec['task']} also occurs in train: the task's "
                          "configuration allows too few distinct problems")
    out = {"train": train, "test": test}
    if "transfer" in spec:
        n = spec["transfer_size"]
        drawn = entries(4 * n, spec["seed"] + 2 * RG_TEST_SEED_OFFSET, spec["transfer"])
        out["transfer"] = [r for r in drawn if r["question"] not in taken][:n]
        if not out["transfer"]:
            raise CotgenError(f"[problems] every transfer question of {spec['task']} also occurs in train")
    return out


def write(spec: dict[str, Any], folder: Path) -> dict[str, int]:
    from cotgen.io import write_text

    sets = build(spec)
    for split, rows in sets.items():
        write_text(folder / file_name(spec, split), "".join(json.dumps(r) + "\n" for r in rows))
    return {split: len(rows) for split, rows in sets.items()}
