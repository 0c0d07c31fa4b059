"""RL data: the pass-rate curriculum, the held-out slice, and batches that a resumed run sees unchanged."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from cotgen.errors import CotgenError, InputError
from cotgen.train import rl_data
from cotgen.train.rl_config import RLConfig


def problems(n: int) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"p{i}" for i in range(n)], "question": [f"q{i}" for i in range(n)],
                         "answer": [str(i) for i in range(n)]})


def rates(path, values: dict) -> None:
    pl.DataFrame({"problem_id": list(values), "pass_rate": list(values.values()),
                  "n_samples": [8] * len(values)},
                 schema={"problem_id": pl.String, "pass_rate": pl.Float64, "n_samples": pl.Int64}
                 ).write_parquet(path)


def test_curriculum_drops_always_and_never_solved_keeps_unrated(tmp_path):
    path = tmp_path / "pass_rates.parquet"
    rates(path, {"p0": 0.0, "p1": 1.0, "p2": 0.5, "p3": None, "p4": 0.125, "p5": 0.875, "zzz": 0.5})
    kept, stats = rl_data.curriculum(problems(7), rl_data.read_pass_rates(path))
    assert kept["id"].to_list() == ["p2", "p4", "p5", "p6"]
    assert stats == {"unrated": 1, "dropped_bad_gold": 1, "dropped_too_hard": 1, "dropped_too_easy": 1}
    kept, _ = rl_data.curriculum(problems(7), rl_data.read_pass_rates(path), lo=0.2, hi=0.9,
                                 order="easy_first")
    assert kept["id"].to_list() == ["p5", "p2", "p6"]  # highest pass rate first, unrated last


def test_curriculum_file_errors(tmp_path):
    path = tmp_path / "r.parquet"
    rates(path, {"other": 0.5})
    with pytest.raises(CotgenError, match="none of its problem ids"):
        rl_data.curriculum(problems(3), rl_data.read_pass_rates(path))
    rates(path, {"p0": 1.5})
    with pytest.raises(InputError, match="not in"):
        rl_data.read_pass_rates(path)
    pl.DataFrame({"problem_id": ["p0"]}).write_parquet(path)
    with pytest.raises(InputError, match="pass_rate"):
        rl_data.read_pass_rates(path)
    with pytest.raises(InputError, match="not found"):
        rl_data.read_pass_rates(tmp_path / "missing.parquet")


def test_held_out_slice_is_seeded_and_disjoint():
    df = problems(50)
    train, held = rl_data.split_held_out(df, 8, seed=3)
    assert held.height == 8 and train.height == 42
    assert not set(train["id"]) & set(held["id"])
    assert rl_data.split_held_out(df, 8, seed=3)[1]["id"].to_list() == held["id"].to_list()
    assert rl_data.split_held_out(df, 8, seed=4)[1]["id"].to_list() != held["id"].to_list()
    with pytest.raises(CotgenError, match="cannot spare"):
        rl_data.split_held_out(problems(4), 4, seed=0)


def test_batches_flow_across_epochs_and_are_a_function_of_the_step():
    df = problems(5)
    prompts = [f"prompt {q}" for q in df["question"]]
    got = list(rl_data.batches(df, prompts, batch_size=2, steps=6, seed=1, order="shuffle"))
    assert len(got) == 6
    for batch in got:
        assert set(batch) == {"prompts", "answer", "problem_id"}
        assert all(isinstance(v, np.ndarray) and v.shape == (2,) for v in batch.values())  # Tunix needs numpy
        assert [f"prompt q{a}" for a in batch["answer"]] == list(batch["prompts"])
    seen = np.concatenate([b["problem_id"] for b in got])
    assert sorted(seen[:5]) == sorted(df["id"]) and sorted(seen[5:10]) == sorted(df["id"])  # whole epochs
    again = list(rl_data.batches(df, prompts, batch_size=2, steps=6, seed=1, order="shuffle"))
    assert all((a["problem_id"] == b["problem_id"]).all() for a, b in zip(got, again))
    easy = list(rl_data.batches(df, prompts, batch_size=2, steps=3, seed=1, order="easy_first"))
    assert np.concatenate([b["problem_id"] for b in easy]).tolist() == ["p0", "p1", "p2", "p3", "p4", "p0"]


def test_load_holds_out_and_filters(tmp_path, data_dir):
    path = tmp_path / "pass_rates.parquet"
    cfg = RLConfig(source="gsm8k", split="train", limit=30, eval_size=5, data_dir=data_dir, pass_rates=path)
    from cotgen.sources import load_problems

    ids = load_problems("gsm8k", "train", data_dir=data_dir, limit=30)["id"].to_list()
    rates(path, {ids[0]: 0.0, ids[1]: 1.0, ids[2]: 0.5})
    data = rl_data.load(cfg)
    assert data.held_out.height == 5
    assert data.stats["problems"] == 30
    dropped = set(ids[:2]) - set(data.held_out["id"])  # the always- and never-solved ones left for training
    assert data.stats["train"] == data.train.height == 25 - len(dropped)
    assert not set(ids[:2]) & set(data.train["id"])
    test_cfg = RLConfig(source="gsm8k", split="train", limit=30, eval_size=4, eval_split="test",
                        data_dir=data_dir)
    data = rl_data.load(test_cfg)
    assert data.train.height == 30 and data.held_out.height == 4


def test_a_source_without_gold_answers_is_an_error(tmp_path):
    path = tmp_path / "qs.jsonl"
    path.write_text('{"question": "1+1?", "answer": ""}\n')
    with pytest.raises(CotgenError, match="answer"):
        rl_data.load(RLConfig(source=str(path), eval_size=0))
    path.write_text('{"question": "1+1?"}\n')
    with pytest.raises(CotgenError, match="answer"):
        rl_data.load(RLConfig(source=str(path), eval_size=0))


def test_prompt_budget_is_the_longest_prompt_rounded_up():
    from cotgen.train.rl_data import prompt_budget

    assert prompt_budget(["a" * 10, "b" * 70], len) == 128
    assert prompt_budget(["a" * 64], len) == 64
    assert prompt_budget(["a" * 65], len, multiple=32) == 96


def test_vllm_rollouts_pad_prompts_to_a_multiple_of_16():
    from cotgen.train.rl_data import prompt_budget, prompt_multiple

    assert (prompt_multiple("vllm"), prompt_multiple("vanilla")) == (16, 64)
    assert prompt_budget(["a" * 85], len, multiple=prompt_multiple("vllm")) == 96
