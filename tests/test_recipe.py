"""`cotgen run`: recipe parsing and wiring, the skip / resume / refuse bookkeeping, the report, the dry-run.

The bookkeeping tests replace each stage's subprocess with a stand-in that writes what the stage would (a
config.toml, a run.json, eval samples with known verdicts): they test the runner, not the stages. The report
is computed by the real `cotgen eval --compare` code on eval folders in the eval stage's own format.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import polars as pl
import pytest

from cotgen.errors import CotgenError, InputError
from cotgen.eval.adapters import add_work
from cotgen.eval.records import SAMPLE_SCHEMA, WORK
from cotgen.recipe import plan as plan_mod
from cotgen.recipe import runner

REPO = Path(__file__).resolve().parents[1]
CPU_DEMO = REPO / "recipes" / "cpu-demo.toml"
TPU = REPO / "recipes" / "gemma3-1b-tpu.toml"

SMALL = """
[problems]
task = "chain_sum"
config = { min_terms = 2, max_terms = 2, min_digits = 1, max_digits = 1 }
train = 20
test = 10

[generate]
teacher = "gemma-3-270m"
n = 2
max_tokens = 32

[train]
model = "gemma-3-270m"
lora_rank = 4
steps = 2
batch_size = 2
max_len = 128

[eval]
max_tokens = 32

[eval.base]
prompt_style = "few_shot"

[eval.final]
prompt_style = "chat"
"""


def write_recipe(tmp_path: Path, text: str = SMALL, name: str = "small.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------- wiring
def test_cpu_demo_wires_one_run_folder(tmp_path):
    shipped = [s.name for s in plan_mod.build(CPU_DEMO, out=tmp_path / "run").stages]
    assert "train-sft-only" not in shipped and "eval-sft-only.test" not in shipped  # the ablation is opt-in
    text = CPU_DEMO.read_text()
    assert "\nsft_only = false" in text
    ablation = write_recipe(tmp_path, text.replace("\nsft_only = false", "\nsft_only = true", 1), "demo.toml")
    p = plan_mod.build(ablation, out=tmp_path / "run")
    names = [s.name for s in p.stages]
    assert names == ["problems", "generate", "filter", "distill-logits", "train", "train-sft-only", "export",
                     "export-sft-only", "rl", "rl-export", "eval-base.test", "eval-final.test", "eval-sft.test",
                     "eval-sft-only.test", "eval-base.transfer", "eval-final.transfer", "report"]
    out = tmp_path / "run"
    gen, filt, train = p.stage("generate"), p.stage("filter"), p.stage("train")
    assert gen.config["out"] == str(out / "traces")
    task = p.stage("problems").config["task"]
    assert gen.config["source"] == str(out / "problems" / f"rg-{task}-train.jsonl")
    assert (filt.config["traces"], filt.config["out"]) == (str(out / "traces"), str(out / "data"))
    # distillation: the teacher's top-k over its own traces, then the student trains on them
    logits = p.stage("distill-logits")
    assert logits.config["data"] == str(out / "data") and logits.config["teacher_prompt"] == "auto"
    assert train.command == "distill train" and train.config["logits"] == str(out / "logits")
    assert (train.config["data"], train.config["out"]) == (str(out / "data"), str(out / "sft"))
    # the ablation: SFT on the same data, steps and seed, no teacher
    only = p.stage("train-sft-only")
    assert only.command == "train" and only.config["out"] == str(out / "sft-only") and "logits" not in only.config
    for key in ("data", "steps", "seed", "lr", "batch_size", "max_len", "lora_rank"):
        assert only.config[key] == train.config[key], key
    assert p.stage("export").config["ckpt"] == str(out / "sft")
    assert p.stage("rl").config["model"] == str(out / "sft-model")
    base, final = p.stage("eval-base.test"), p.stage("eval-final.test")
    assert base.config["model"] == "gemma-3-270m" and base.config["prompt_style"] == "few_shot"
    assert final.config["model"] == str(out / "rl-model") and final.config["prompt_style"] == "chat"
    assert base.config["source"] == final.config["source"] == str(out / "problems" / f"rg-{task}-test.jsonl")
    assert p.stage("eval-sft.test").config["model"] == str(out / "sft-model")
    assert p.stage("eval-sft-only.test").config["model"] == str(out / "sft-only-model")
    assert p.stage("eval-sft.test").config["prompt_style"] == "chat"
    transfer = p.stage("eval-final.transfer")
    assert transfer.config["source"] == str(out / "problems" / f"rg-{task}-transfer.jsonl")
    assert [(a.name, b.name) for a, b in p.comparisons()] == [("eval-base.test", "eval-final.test"),
                                                              ("eval-base.transfer", "eval-final.transfer")]
    assert [(label, s.name) for label, s in p.rungs()] == [
        ("base", "eval-base.test"), ("distill", "eval-sft.test"), ("rl", "eval-final.test"),
        ("sft-only", "eval-sft-only.test")]
    # every stage config carries every field of its dataclass (defaults included)
    assert train.config["lora_rank"] == 16 and "warmup_steps" not in train.config  # None is dropped
    assert "max_grad_norm" in train.config


def test_tpu_recipe_phases_chain_models(tmp_path):
    p = plan_mod.build(TPU, out=tmp_path / "r")
    out = tmp_path / "r"
    names = [s.name for s in p.stages]
    assert names[:5] == ["generate.gsm8k", "filter.gsm8k", "generate.math", "filter.math", "merge"]
    assert p.stage("generate.math").config["max_tokens"] == 1024  # the phase overrides the shared table
    assert p.stage("generate.math").config["tensor_parallel_size"] == 4  # the shared table applies
    assert p.stage("train").config["data"] == str(out / "data" / "all")
    assert p.stage("rl.gsm8k").config["model"] == str(out / "sft-model")
    assert p.stage("rl.math").config["model"] == str(out / "rl-model" / "gsm8k")
    assert p.stage("eval-final.math500").config["model"] == str(out / "rl-model" / "math")
    assert p.stage("eval-base.gsm8k").config["model"] == "hf:google/gemma-3-1b-it"
    assert len(p.comparisons()) == 2


def test_distill_turns_train_into_distill_train(tmp_path):
    online = SMALL + '\n[distill]\nteacher = "gemma-3-270m"\nalpha = 0.7\n'
    p = plan_mod.build(write_recipe(tmp_path, online), out=tmp_path / "run")
    train = p.stage("train")
    assert train.command == "distill train" and train.config["teacher"] == "gemma-3-270m"
    assert train.config["alpha"] == 0.7 and train.config["data"] == str(tmp_path / "run" / "data")
    offline = SMALL + '\n[distill]\nteacher = "gemma-3-270m"\n\n[distill.logits]\ntop_k = 32\n'
    p = plan_mod.build(write_recipe(tmp_path, offline), out=tmp_path / "run")
    logits, train = p.stage("distill-logits"), p.stage("train")
    assert logits.command == "distill logits" and logits.config["top_k"] == 32
    assert logits.config["data"] == str(tmp_path / "run" / "data") and logits.config["teacher"] == "gemma-3-270m"
    assert train.config["logits"] == str(tmp_path / "run" / "logits") and "teacher" not in train.config
    assert train.after == ("distill-logits",)
    assert runner.argv(p, logits, "run")[3:5] == ["distill", "logits"]


@pytest.mark.parametrize("text,message", [
    ("[train]\ndata = 'd'\nout = 'x'\n[eval]\n", "which the runner fills"),
    ("[train]\ndata = 'd'\nlr_typo = 1\n[eval]\n", "unknown key 'lr_typo'"),
    ("[train]\n[eval]\n[evaluate]\n", "unknown table(s) evaluate"),
    ("[train]\n", "needs a [eval] table"),
    ("[train]\n[eval]\n", "[train] has no data"),
    ("[train]\ndata = 'd'\nlora_rank = -1\n[eval]\n", "[train]: --lora-rank must be >= 0"),
    ("[train]\ndata = 'd'\n[eval]\n[eval.final]\nmodel = 'x'\n", "which the runner fills"),
    ("[train]\n[filter]\n[eval]\n", "[filter] needs a [generate] table"),
])
def test_bad_recipes_fail_before_any_work(tmp_path, text, message):
    with pytest.raises(CotgenError) as err:
        plan_mod.build(write_recipe(tmp_path, "[run]\n" + text), out=tmp_path / "run")
    assert message in str(err.value)


# ---------------------------------------------------------------------------------------------------- bookkeeping
def _eval_samples(folder: Path, model: str, n: int = 40, rates: dict | None = None) -> None:
    """An eval folder in `cotgen eval`'s format: the base is right on 30% of problems, a trained model on 70%
    (or `rates[model folder name]`)."""
    rate = 0.3 if model == "gemma-3-270m" else (rates or {}).get(Path(model).name, 0.7)
    rows = []
    for i in range(n):
        ok = (i % 10) < rate * 10
        answer = "1" if ok else "2"
        rows.append({"problem_id": f"p{i:03d}", "pass": "greedy", "sample_idx": 0, "source": "s", "split": "test",
                     "metadata": "{}", "gold": "1",
                     "completion": f"<reasoning>3 - {answer} = 2</reasoning>\n<answer>{answer}</answer>",
                     "finish_reason": "stop", "prompt_tokens": 5, "completion_tokens": 7, "temperature": 0.0,
                     "seed": 0, "error": None, "extracted": answer, "method": "answer_tag", "vote": answer,
                     "correct": ok, "status": "correct" if ok else "wrong", "path": "numeric", "format_ok": True})
    folder.mkdir(parents=True, exist_ok=True)
    samples = add_work(pl.DataFrame(rows, schema=SAMPLE_SCHEMA).drop(*WORK)).select(SAMPLE_SCHEMA.names())
    samples.write_parquet(folder / "samples.parquet")
    protocol = {"model": model, "prompt_style": "few_shot" if rate < 0.5 else "chat", "max_tokens": 32}
    (folder / "metrics.json").write_text(json.dumps({"protocol": protocol}))


class FakeStages:
    """Stands in for `python -m cotgen.cli STAGE ...`: records each call and writes the stage's output files."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.fail: set[str] = set()
        self.rates: dict[str, float] = {}  # eval: model folder name -> share right

    def __call__(self, cmd, log_path, env):
        command = " ".join(cmd[3:5]) if cmd[3] == "distill" else cmd[3]
        if command == "export":
            out = Path(cmd[cmd.index("--out") + 1])
            values = {"ckpt": cmd[4], "overwrite": "--overwrite" in cmd}
        else:
            values = tomllib.loads(Path(cmd[cmd.index("--config") + 1]).read_text())
            out = Path(values["out"])
        self.calls.append((command, values))
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(f'[cotgen]\ncommand = "{command}"\n')
        if command in self.fail:
            return 1
        if command == "eval":
            _eval_samples(out, values["model"], rates=self.rates)
        if command in ("train", "rl"):
            (out / "run.json").write_text(json.dumps({"status": "done", "final_step": 2}))
        return 0

    def commands(self) -> list[str]:
        return [c for c, _ in self.calls]


@pytest.fixture
def fake(monkeypatch):
    stages = FakeStages()
    monkeypatch.setattr(runner, "run_subprocess", stages)
    return stages


def test_run_then_skip_then_refuse_a_changed_stage(tmp_path, fake):
    recipe = write_recipe(tmp_path)
    out = tmp_path / "run"
    first = runner.run(plan_mod.build(recipe, out=out))
    assert [r["action"] for r in first] == ["ran"] * 8
    assert fake.commands() == ["generate", "filter", "train", "export", "eval", "eval"]
    assert len((out / "problems" / "rg-chain_sum-train.jsonl").read_text().splitlines()) > 5
    assert (out / "report.md").is_file() and (out / "report.png").is_file()
    # each stage got its --config file and its record
    assert tomllib.loads((out / "recipe" / "train.toml").read_text())["data"] == str(out / "data")
    assert json.loads((out / "recipe" / "train.json").read_text())["status"] == "done"

    second = runner.run(plan_mod.build(recipe, out=out))
    assert [r["action"] for r in second] == ["skipped"] * 7 + ["ran"]  # the report is always redone
    assert len(fake.calls) == 6

    recipe.write_text(SMALL.replace("steps = 2", "steps = 3"))
    with pytest.raises(CotgenError) as err:
        runner.run(plan_mod.build(recipe, out=out))
    assert "stage train" in str(err.value) and "steps: 2 -> 3" in str(err.value)
    assert len(fake.calls) == 6  # nothing ran


def test_a_changed_input_stage_refuses_the_stages_after_it(tmp_path, fake):
    recipe = write_recipe(tmp_path)
    out = tmp_path / "run"
    runner.run(plan_mod.build(recipe, out=out))
    # the user deleted the traces and data to regenerate with n = 3: train, fed by new data, must not be skipped
    import shutil

    for name in ("traces", "data"):
        shutil.rmtree(out / name)
        (out / "recipe" / f"{'generate' if name == 'traces' else 'filter'}.json").unlink()
    recipe.write_text(SMALL.replace("n = 2", "n = 3"))
    with pytest.raises(CotgenError) as err:
        runner.run(plan_mod.build(recipe, out=out))
    assert "stage train" in str(err.value) and "input stage(s) filter changed" in str(err.value)
    assert fake.commands()[-2:] == ["generate", "filter"]


def test_a_failed_stage_resumes(tmp_path, fake):
    recipe = write_recipe(tmp_path)
    out = tmp_path / "run"
    fake.fail = {"train"}
    with pytest.raises(CotgenError) as err:
        runner.run(plan_mod.build(recipe, out=out))
    assert "stage train failed" in str(err.value) and "resumes" in str(err.value)
    assert json.loads((out / "recipe" / "train.json").read_text())["status"] == "started"
    fake.fail = set()
    rows = runner.run(plan_mod.build(recipe, out=out))
    actions = {r["stage"]: r["action"] for r in rows}
    assert actions["generate"] == actions["filter"] == "skipped" and actions["train"] == "resumed"
    resumed = [v for c, v in fake.calls if c == "train"][-1]
    assert resumed["resume"] is True
    # the recipe's value, not the flag's
    assert json.loads((out / "recipe" / "train.json").read_text())["config"]["resume"] is False


def test_a_folder_made_elsewhere_is_refused(tmp_path, fake):
    out = tmp_path / "run"
    (out / "sft").mkdir(parents=True)
    (out / "sft" / "something").write_text("x")
    with pytest.raises(CotgenError, match="exists but was not made by this run"):
        runner.run(plan_mod.build(write_recipe(tmp_path), out=out))


def test_only_runs_the_named_stages_once_their_inputs_are_done(tmp_path, fake):
    recipe = write_recipe(tmp_path)
    out = tmp_path / "run"
    with pytest.raises(CotgenError, match="reads .* which is not done"):
        runner.run(plan_mod.build(recipe, out=out), only=["train"])
    runner.run(plan_mod.build(recipe, out=out), only=["problems", "generate", "filter"])
    assert fake.commands() == ["generate", "filter"]
    rows = runner.run(plan_mod.build(recipe, out=out), only=["train,export"])
    assert [r["stage"] for r in rows] == ["train", "export"]
    with pytest.raises(CotgenError, match="no such stage"):
        runner.run(plan_mod.build(recipe, out=out), only=["nope"])


def test_report_compares_base_and_final(tmp_path, fake):
    out = tmp_path / "run"
    runner.run(plan_mod.build(write_recipe(tmp_path), out=out))
    doc = json.loads((out / "report.json").read_text())
    phase = doc["phases"][0]
    assert phase["headline"]["a"] == pytest.approx(0.3) and phase["headline"]["b"] == pytest.approx(0.7)
    assert phase["goal"]["met"] is True and phase["goal"]["gain_points"] == pytest.approx(40.0)
    assert phase["comparison"]["mcnemar"]["b_only"] == 16
    text = (out / "report.md").read_text()
    assert "base 30.0% -> trained 70.0% (+40.0 points" in text and "met" in text
    assert "`few_shot` prompts" in text and "`chat` prompts" in text
    # "3 - 1 = 2" is right work for a right answer, "3 - 2 = 2" false work for a wrong one
    assert "Faithful work (right answer, a right arithmetic step and no wrong one): base 30.0% -> trained 70.0%" in text
    assert "false arithmetic step: base 70.0% -> trained 30.0%" in text
    assert {t["stage"] for t in doc["timings"]} >= {"generate", "train", "eval-final"}


LADDER = SMALL + """
[distill]
teacher = "gemma-3-270m"
sft_only = true

[rl]
steps = 2
"""


def test_report_ladder_rung_by_rung(tmp_path, fake):
    out = tmp_path / "run"
    fake.rates = {"sft-model": 0.5, "sft-only-model": 0.4}
    rows = runner.run(plan_mod.build(write_recipe(tmp_path, LADDER), out=out))
    assert {r["stage"] for r in rows} >= {"train-sft-only", "export-sft-only", "eval-sft", "eval-sft-only"}
    assert fake.commands().count("train") == 1 and fake.commands().count("distill train") == 1
    doc = json.loads((out / "report.json").read_text())
    steps = {(st["from"], st["to"]): st for st in doc["ladder"]}
    assert list(steps) == [("base", "distill"), ("distill", "rl"), ("base", "sft-only"), ("sft-only", "distill")]
    p = steps[("base", "distill")]["metrics"]["pass@1"]
    assert (p["a"], p["b"]) == (pytest.approx(0.3), pytest.approx(0.5)) and p["lo"] > 0
    assert steps[("distill", "rl")]["mcnemar"]["b_only"] == 8  # 20 of 40 right -> 28 of 40
    assert steps[("sft-only", "distill")]["metrics"]["pass@1"]["diff"] == pytest.approx(0.1)
    assert "format" in steps[("distill", "rl")]["metrics"] and "truncated" in steps[("distill", "rl")]["metrics"]
    w = steps[("distill", "rl")]["metrics"]["faithful"]  # the fake's right answers carry right work
    assert (w["a"], w["b"]) == (pytest.approx(0.5), pytest.approx(0.7))
    text = (out / "report.md").read_text()
    assert "## The ladder, rung by rung" in text and "| distill -> **rl** | 50.0% -> 70.0% | +20.0 |" in text
    assert "| faithful work (change, 95% CI) |" in text and "| 50.0% -> 70.0% (+20.0, [+" in text
    assert (out / "ladder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the headline still compares base and final (rl)
    assert doc["phases"][0]["headline"]["b"] == pytest.approx(0.7)


def test_transfer_split_is_harder_and_disjoint(tmp_path):
    from cotgen.recipe import problems

    spec = problems.check({"task": "chain_sum", "config": {"min_terms": 2, "max_terms": 2, "max_digits": 1},
                           "train": 50, "test": 10, "transfer": {"min_terms": 4, "max_terms": 4},
                           "transfer_size": 12}, tmp_path / "r.toml")
    sets = problems.build(spec)
    assert len(sets["transfer"]) == 12
    assert not {r["question"] for r in sets["transfer"]} & {r["question"] for r in sets["train"]}
    assert all(r["question"].count("+") + r["question"].count("-") == 3 for r in sets["transfer"])
    assert all(r["question"].count("+") + r["question"].count("-") == 1 for r in sets["train"])
    with pytest.raises(CotgenError, match="transfer split needs"):
        plan_mod.build(write_recipe(tmp_path, SMALL + '\n[eval.hard]\nsplit = "transfer"\n'), out=tmp_path / "x")


def test_a_teacher_of_another_vocabulary_is_refused_before_any_work(tmp_path, fake):
    text = SMALL + '\n[distill]\nteacher = "google/gemma-2-9b-it"\n\n[distill.logits]\ntop_k = 8\n'
    plan = plan_mod.build(write_recipe(tmp_path, text), out=tmp_path / "run")
    with pytest.raises(InputError, match=r"distill\.teacher.*gemma2.*cannot score.*gemma3") as err:
        runner.preflight(plan)
    assert err.value.field == "distill.teacher" and str(err.value).startswith(str(tmp_path / "small.toml"))
    assert fake.calls == []


def test_report_says_when_the_goal_is_missed(tmp_path):
    from cotgen.recipe.report import goal

    g = goal({"diff": 0.06, "lo": -0.01, "hi": 0.13}, 10)
    assert not g["met"] and "+6.0 points" in g["why"] and "not met" in g["why"]
    assert not goal({"diff": 0.12, "lo": -0.01, "hi": 0.25}, 10)["met"]
    assert goal({"diff": 0.12, "lo": 0.02, "hi": 0.25}, 10)["met"]


# ---------------------------------------------------------------------------------------------------- dry-run
def test_dry_run_cpu_demo(tmp_path, embedded_folder):
    from cotgen.recipe import dryrun

    lines = []
    ok = dryrun.run(plan_mod.build(CPU_DEMO, out=tmp_path / "run"), echo=lines.append)
    text = "\n".join(lines)
    assert ok, text
    assert "gemma3_270m: 0.268 B parameters" in text
    assert "eval-final.test: chat prompts" in text and "eval-base.test: few_shot prompts" in text
    assert "0 held-out questions also in training" in text
    assert not (tmp_path / "run").exists()  # a dry-run writes nothing


def test_dry_run_tpu_recipe(tmp_path, embedded_folder, data_dir):
    from cotgen.recipe import dryrun

    lines = []
    ok = dryrun.run(plan_mod.build(TPU, out=tmp_path / "run"), echo=lines.append)
    text = "\n".join(lines)
    assert ok, text
    assert "gemma3_12b_it: 11.766 B parameters" in text and "gemma3_1b_it: 1.000 B parameters" in text
    assert "generate.gsm8k: vLLM tensor 4 x data 2 = 8 of 8 devices" in text
    assert "train: mesh fsdp=8 x tp=1 = 8 of 8 devices" in text
    assert "against a budget of 9 h" in text


def test_dry_run_flags_a_bad_mesh_and_memory(tmp_path, embedded_folder, data_dir):
    from cotgen.recipe import dryrun

    text = TPU.read_text().replace('mesh = "fsdp=8,tp=1"\nsave_every = 200', 'mesh = "fsdp=16,tp=1"\nsave_every = 200')
    text = text.replace("batch_size = 16 ", "batch_size = 128 ")
    lines = []
    ok = dryrun.run(plan_mod.build(write_recipe(tmp_path, text, "tpu.toml"), out=tmp_path / "run"),
                    echo=lines.append)
    text = "\n".join(lines)
    assert not ok
    assert "[FAIL] train: mesh fsdp=16 x tp=1 = 16 of 8 devices" in text
    assert any(line.startswith("  [FAIL] train ") and "GiB per device" in line for line in text.splitlines())


def test_run_help_imports_no_heavy_module():
    code = ("import sys; from cotgen.cli import main\n"
            "try: main(['run', '--help'])\nexcept SystemExit: pass\n"
            "print([m for m in ('jax', 'vllm', 'tunix', 'torch', 'polars') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--dry-run" in out and out.strip().endswith("[]"), out


def test_problem_sets_are_disjoint_and_seeded(tmp_path):
    from cotgen.recipe import problems

    spec = problems.check({"task": "chain_sum", "config": {"min_terms": 2, "max_terms": 2, "max_digits": 1},
                           "train": 150, "test": 40}, tmp_path / "r.toml")
    sets = problems.build(spec)
    train_q = {r["question"] for r in sets["train"]}
    assert len(sets["test"]) == 40 and not train_q & {r["question"] for r in sets["test"]}
    assert len(train_q) == len(sets["train"])  # repeated questions dropped
    assert problems.build(spec) == sets  # seeded
    counts = problems.write(spec, tmp_path / "p")
    lines = (tmp_path / "p" / "rg-chain_sum-test.jsonl").read_text().splitlines()
    assert counts["test"] == len(lines) == 40 and json.loads(lines[0]).keys() == {"question", "answer"}
    from cotgen.sources import load_problems

    df = load_problems(str(tmp_path / "p" / "rg-chain_sum-test.jsonl"), "test")
    assert df.height == 40 and df["answer"].null_count() == 0
    with pytest.raises(CotgenError, match="unknown key"):
        problems.check({"task": "chain_sum", "size": 3}, tmp_path / "r.toml")
    with pytest.raises(CotgenError, match="cannot build"):
        problems.build({**spec, "config": {"no_such_knob": 1}})


def test_cli_bad_recipe_is_one_line_and_exit_2(tmp_path):
    from click.testing import CliRunner

    from cotgen.cli import main

    result = CliRunner().invoke(main, ["run", str(write_recipe(tmp_path, "[train]\n[eval]\n[nope]\n"))])
    assert result.exit_code == 2 and "unknown table(s) nope" in result.output
    result = CliRunner().invoke(main, ["run", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "recipe file not found" in result.output
