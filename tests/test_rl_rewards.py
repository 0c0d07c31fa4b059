"""RL rewards: each component, the weighted functions as Tunix calls them, and the dominance of correctness
over every reward weighting the config accepts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cotgen.errors import CotgenError
from cotgen.prompts import student_target
from cotgen.train import rewards
from cotgen.train.rl_config import RLConfig


def encode(text: str) -> list[int]:
    return list(range(len(text.split())))  # one "token" per word: enough for lengths


GOOD = student_target("12 + 30 = 42", "42")  # formatted, correct for gold 42


def test_correctness_uses_the_verifier_strictly():
    completions = [GOOD, student_target("so", "$42.00"), student_target("so", "41"), "12 + 30 = 42\n#### 42",
                   "<reasoning>x</reasoning><answer> </answer>", "", student_target("so", "\\frac{84}{2}")]
    golds = ["42"] * len(completions)
    assert list(rewards.correctness(completions, golds)) == [1, 1, 0, 0, 0, 0, 1]
    # the whole ladder reads `#### 42` too
    assert list(rewards.correctness(completions[3:4], golds[3:4], strict=False)) == [1]


def test_a_gold_the_verifier_cannot_parse_is_never_rewarded():
    assert list(rewards.correctness([student_target("r", "")], [""])) == [0]
    assert list(rewards.correctness([student_target("r", "x")], ["   "])) == [0]


def test_strict_format():
    texts = [GOOD, f"  {GOOD}\n", GOOD + " more", "<answer>42</answer>", "<reasoning>a</reasoning>",
             "<reasoning></reasoning>\n<answer>1</answer>", "<reasoning>a<answer>1</answer></reasoning>", ""]
    assert list(rewards.strict_format(texts)) == [1, 1, 0, 0, 0, 0, 0, 0]


def test_overlong_penalty_ramps_over_the_buffer():
    got = rewards.overlong_penalty([0, 60, 64, 80, 96, 100, 200], max_tokens=100, buffer=36)
    assert np.allclose(got, [0, 0, 0, -16 / 36, -32 / 36, -1, -1])


def test_functions_weight_each_component_and_take_tunix_keyword_arguments():
    r = rewards.Rewards(rewards.Weights(2.0, 0.5, 0.25), encode=encode, max_tokens=8, buffer=4)
    fns = r.functions()
    assert [f.__name__ for f in fns] == list(rewards.COMPONENTS)
    completions = [GOOD, "wrong " * 20]
    kw = dict(prompts=["p", "p"], completions=completions, answer=np.array(["42", "42"]),
              problem_id=np.array(["a", "a"]), mode="train", trajectory_ids=["0_0", "0_1"])
    r.set_lengths([3, 8])  # the sampled counts, handed over by the trainer
    got = [f(**kw) for f in fns]
    assert got == [[2.0, 0.0], [0.5, 0.0], [0.0, -0.25], [0.0, 0.0]]  # work weight 0: logged, not paid
    raw = {k: list(v) for k, v in r.last.items()}
    assert raw == {"correctness": [1, 0], "format": [1, 0], "length": [0, -1], "work": [1, 0]}
    assert list(r.tokens(completions)) == [len(GOOD.split()), 20]  # no counts set: re-tokenized


def _allowed(wc: float, wf: float, wl: float) -> bool:
    try:
        RLConfig(correctness_weight=wc, format_weight=wf, length_weight=wl)
    except CotgenError:
        return False
    return True


def test_correctness_dominates_for_every_weighting_the_config_allows():
    """Worst correct completions (unformatted, cut at the length limit) vs best wrong ones (formatted,
    short)."""
    max_tokens, buffer = 16, 4
    correct = [GOOD, GOOD + " trailing text breaks the format", "<answer>42</answer>",
               "<reasoning>42</reasoning><answer>42</answer> and more text after it"]
    wrong = [student_target("12 + 30 = 41", "41"), "42 is the answer but it is not tagged", "",
             "<reasoning>x</reasoning>\n<answer></answer>", student_target("r", "42 or 43")]
    golds = ["42"] * (len(correct) + len(wrong))
    texts = correct + wrong
    base = rewards.Rewards(rewards.Weights(), encode=encode, max_tokens=max_tokens, buffer=buffer)
    worst = base.score(texts, golds, lengths=[max_tokens] * len(correct) + [0] * len(wrong))
    best = base.score(texts, golds, lengths=[0] * len(texts))
    assert list(worst["correctness"]) == [1] * len(correct) + [0] * len(wrong)
    grid = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0]
    allowed = 0
    for wc, wf, wl in itertools.product(grid, repeat=3):
        if not _allowed(wc, wf, wl):
            continue
        allowed += 1
        w = rewards.Weights(wc, wf, wl)
        lowest_correct = w.total(worst)[:len(correct)].min()
        highest_wrong = w.total(best)[len(correct):].max()
        assert lowest_correct > highest_wrong, (wc, wf, wl)
    assert allowed > 100
    rng = np.random.default_rng(0)
    for wc, wf, wl in rng.uniform(0, 5, size=(2000, 3)):
        if _allowed(wc, wf, wl):
            w = rewards.Weights(wc, wf, wl)
            assert w.total(worst)[:len(correct)].min() > w.total(best)[len(correct):].max()


@pytest.mark.parametrize("weights", [(1.0, 1.0, 0.0), (1.0, 0.5, 0.5), (1.0, 0.9, 0.2), (0.0, 0.0, 0.0),
                                     (1.0, -0.1, 0.0), (1.0, 0.1, -0.5), (float("nan"), 0.1, 0.1)])
def test_weights_that_let_format_win_are_refused_at_config_time(weights):
    wc, wf, wl = weights
    with pytest.raises(CotgenError, match="weight"):
        RLConfig(correctness_weight=wc, format_weight=wf, length_weight=wl)
    with pytest.raises(CotgenError):
        rewards.Weights(wc, wf, wl)


def test_work_reward_is_the_share_of_right_steps():
    texts = [GOOD, student_target("12 + 30 = 41, so 41 + 1 = 42", "42"), student_target("twelve and thirty", "42"),
             "12 + 30 = 42 and 2 * 3 = 7, no tags", student_target("x + 3 = 5", "2")]
    assert list(rewards.step_work(texts)) == [1.0, 0.5, 0.0, 0.5, 0.0]


def test_work_weight_keeps_correctness_dominant_and_rewards_right_work():
    w = rewards.Weights(1.0, 0.2, 0.1, 0.5)
    right = {"correctness": [1, 1], "format": [0, 0], "length": [-1, -1], "work": [1.0, 0.0]}
    wrong = {"correctness": [0], "format": [1], "length": [0], "work": [1.0]}
    assert w.total(wrong).max() < w.total(right).min()  # a wrong answer with perfect work still loses
    assert w.total(right)[0] > w.total(right)[1]  # right work beats wrong work among correct answers
    with pytest.raises(CotgenError, match="work"):
        RLConfig(correctness_weight=1.0, format_weight=0.2, length_weight=0.1, work_weight=0.7)
    with pytest.raises(CotgenError, match="work-weight"):
        rewards.Weights(1.0, 0.2, 0.1, -0.1)


def test_work_reward_and_eval_read_the_same_text():
    """A reasoning block followed by a broken format: the reward checks the whole text, as eval does (a false
    step after `</reasoning>` is not hidden from either)."""
    import polars as pl

    from cotgen.eval.adapters import add_work

    texts = ["<reasoning>2 + 3 = 5</reasoning> and 4 + 4 = 9 <answer>5",
             student_target("2 + 3 = 5", "5"), "2 + 3 = 5 then 1 + 1 = 3"]
    reward = rewards.step_work(texts)
    evaled = add_work(pl.DataFrame({"completion": texts}))
    assert list(reward) == [0.5, 1.0, 0.5]
    checked = evaled["steps_right"] + evaled["steps_wrong"]
    assert list(reward) == list(evaled["steps_right"] / checked)
