"""Write notebooks/cotgen-kaggle-tpu.ipynb: a cotgen recipe run on Kaggle, start to Tunix checkpoint.

The notebook is generated, not edited by hand, so its cells stay reviewable as Python strings and it is stored
with no outputs:

    .venv/bin/python notebooks/build_notebook.py          # rewrite the notebook
    .venv/bin/python notebooks/build_notebook.py --check  # exit 1 if the stored notebook differs

tests/test_notebook_slow.py executes it at smoke scale (the `parameters` cell replaced, papermill-style).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

PATH = Path(__file__).with_name("cotgen-kaggle-tpu.ipynb")

INTRO = """\
# cotgen on Kaggle: teach Gemma to show its work

This notebook runs one cotgen recipe end to end on a Kaggle **TPU v5e-8** session and
leaves a **Tunix-loadable orbax checkpoint** of the trained student, as the *Google Tunix Hack* asks. The
student answers in the competition's format:

    <reasoning>step by step ...</reasoning>
    <answer>42</answer>

What happens, one cell each: install cotgen, point the recipe at this notebook's Kaggle inputs, check it
(`--dry-run`), run it (teacher traces -> verified data -> Tunix SFT -> GRPO -> evaluation, each stage in its
own process), show the report, then export the student with `cotgen export --format orbax`, load it back and
answer one question through Tunix's sampler.

**Set-up on Kaggle:** accelerator *TPU v5e-8*; add the model as an input (*Add Input -> Models*, e.g. Gemma 3
1B IT, variation *transformers*); make cotgen's source available (a git clone with internet on, or an
uploaded dataset) and set `COTGEN_SRC`. Set `SMOKE = True` first: the same stage graph on tiny random models,
in minutes, before you spend the session."""

PARAMS_MD = """\
## Parameters

Paths are relative to the working directory (`/kaggle/working` on Kaggle). `RECIPE` may also be relative to
`COTGEN_SRC`. Leave `KAGGLE_MODEL`, `TEACHER` and `DATA_DIR` as `None` to keep the recipe's own values."""

PARAMS = """\
RECIPE = "recipes/gemma3-1b-tpu.toml"  # the recipe to run (recipes/gemma2-2b-tpu.toml: Gemma 2 2B)
SMOKE = False        # True: the recipe's stage graph on tiny random models, a few steps (cotgen run --smoke)
OUT = "runs/kaggle"  # the run folder: every stage's output, the report, and tunix-checkpoint/
INSTALL = True       # pip-install cotgen (with its TPU extra) from COTGEN_SRC
COTGEN_SRC = "."     # cotgen's source: a git clone, or an uploaded dataset such as /kaggle/input/cotgen
KAGGLE_MODEL = None  # the student, e.g. "/kaggle/input/gemma-3/transformers/gemma-3-1b-it/1"
TEACHER = None       # the teacher, e.g. a larger Gemma's Kaggle Models folder (None: the recipe's)
DATA_DIR = None      # GSM8K / MATH files laid out like cotgen's shared/data (None: the Hugging Face hub)
VLLM_PYTHON = None   # the python of a second venv holding vllm-tpu, for the vLLM stages (None: the recipe's)"""

INSTALL_MD = """\
## Install

`pip install -e COTGEN_SRC[tpu]` installs cotgen with its TPU extra (jax[tpu], libtpu), at the JAX version
Tunix is pinned to. vllm-tpu cannot share an environment with Tunix 0.1.7 (its tpu-inference pins an older
qwix): the README's *Installing on a TPU VM or a GPU* makes a second venv for it; set `VLLM_PYTHON` to that
venv's python and the vLLM stages (teacher sampling, evaluation) run under it, or set those stages' `backend`
to `"tunix"`. Caveats on a TPU VM: the install replaces
the image's own JAX, so run it before anything imports JAX; only one process can hold the TPU at a time, which
is why every stage runs in its own process and the kernel itself touches the TPU only in the last cell. An
uploaded dataset is read-only: copy it to `/kaggle/working` first, or install it without `-e`."""

INSTALL_CODE = """\
import sys
from pathlib import Path

if INSTALL:
    %pip install -q -e "{COTGEN_SRC}[tpu]"
sys.path.insert(0, str(Path(COTGEN_SRC).resolve()))  # new processes see the install; this kernel needs this
import cotgen

print("cotgen", cotgen.__version__, "from", Path(cotgen.__file__).parent)"""

RECIPE_MD = """\
## Point the recipe at this notebook's inputs

The recipe is copied to `OUT/recipe-kaggle.toml` with the Kaggle paths filled in (`train.model`,
`generate.teacher`, `run.data_dir`, `run.vllm_python`); the diff shows exactly what changed."""

RECIPE_CODE = """\
import difflib
import tomllib

import tomli_w

recipe = Path(RECIPE) if Path(RECIPE).is_file() else Path(COTGEN_SRC) / RECIPE
original = tomllib.loads(recipe.read_text())
doc = tomllib.loads(recipe.read_text())
if KAGGLE_MODEL:
    doc["train"]["model"] = KAGGLE_MODEL
if TEACHER:
    doc["generate"]["teacher"] = TEACHER
if DATA_DIR:
    doc.setdefault("run", {})["data_dir"] = str(Path(DATA_DIR).resolve())
if VLLM_PYTHON:
    doc.setdefault("run", {})["vllm_python"] = VLLM_PYTHON

Path(OUT).mkdir(parents=True, exist_ok=True)
kaggle_recipe = Path(OUT) / "recipe-kaggle.toml"
kaggle_recipe.write_text(tomli_w.dumps(doc))
diff = difflib.unified_diff(tomli_w.dumps(original).splitlines(), tomli_w.dumps(doc).splitlines(),
                            str(recipe), str(kaggle_recipe), lineterm="")
print("\\n".join(diff) or f"{kaggle_recipe}: the recipe unchanged")"""

DRYRUN_MD = """\
## Check it first: the dry-run

Every stage's configuration, the data, prompt lengths, model shapes, meshes against the TPU's 8 chips, and a
time and memory **estimate** per stage against the 9-hour budget, without loading any weights (`cotgen run
--dry-run`). A `FAIL` line stops the notebook here, before the TPU time is spent."""

DRYRUN_CODE = """\
from cotgen.recipe import dryrun, runner
from cotgen.recipe import plan as plan_mod

plan = plan_mod.build(kaggle_recipe, out=OUT, smoke=SMOKE)
if not dryrun.run(plan):
    raise RuntimeError("the dry-run failed (FAIL lines above): fix the recipe before running it")"""

RUN_MD = """\
## Run the recipe

`cotgen run` in this kernel: each stage is a subprocess (vLLM and JAX return the TPU's memory only when their
process exits), its output streamed here with progress bars and kept in `OUT/logs/STAGE.log`. Interrupted or
crashed? Run this cell again: finished stages are skipped, and the one that stopped resumes (training from its
last checkpoint)."""

RUN_CODE = """\
import logging

logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
logging.getLogger("cotgen").setLevel(logging.INFO)  # the runner's line per stage
summary = runner.run(plan)"""

REPORT_MD = """\
## The report

Base vs trained student on the held-out sets (greedy pass@1, paired bootstrap 95% CI, McNemar), the stages'
facts and wall times, then every plot the run drew: the report's, SFT loss, RL rewards, the filter's funnel,
the evaluations'."""

REPORT_CODE = """\
from IPython.display import Image, Markdown, display

report = (Path(OUT) / "report.md").read_text()
display(Markdown("\\n".join(line for line in report.splitlines() if not line.startswith("!["))))
plots = sorted(Path(OUT).rglob("*.png"), key=lambda p: (p.name != "report.png", str(p)))
for png in plots:
    print(png.relative_to(OUT))
    display(Image(filename=str(png)))"""

EXPORT_MD = """\
## The Tunix checkpoint

The final student is the last RL run (else the SFT run). `cotgen export --format orbax` merges any LoRA
adapters and writes Tunix's own layout: `params/` (orbax), `config.json`, `tokenizer.model` and cotgen's
manifest, `cotgen-model.json`."""

EXPORT_CODE = """\
rl_runs = [s for s in plan.stages if s.command == "rl"]
student_run = (rl_runs[-1] if rl_runs else plan.stage("train")).folder
dtype = plan.stage("export").config["dtype"]
checkpoint = Path(OUT) / "tunix-checkpoint"

!{sys.executable} -m cotgen.cli export {student_run} --format orbax --dtype {dtype} --out {checkpoint} \\
    --overwrite
assert (checkpoint / "params").is_dir(), f"no {checkpoint}/params: see the export's error above"
for path in sorted(checkpoint.rglob("*")):
    if path.is_file():
        print(f"{path.stat().st_size:>14,}  {path.relative_to(checkpoint)}")"""

SAMPLE_MD = """\
## Load it back and ask it a question

`cotgen.models.load.load` reads the checkpoint as a Tunix Gemma model; the student prompt is the one SFT, RL
and eval share (`cotgen.prompts.student_prompt`), sampled greedily with Tunix's `Sampler` as `cotgen eval
--backend tunix` does. This is the first cell that puts JAX on the TPU inside the kernel: restart the kernel
before running the recipe cell again. (A smoke run's tiny random model prints noise.)"""

SAMPLE_CODE = """\
from cotgen import prompts
from cotgen.models.check import greedy
from cotgen.models.load import load

student = load(str(checkpoint))
question = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?")
completion = greedy(student, prompts.student_prompt(question), max_tokens=16 if SMOKE else 512)
print(f"{question}\\n-> {completion!r}")
print("format ok:", prompts.STUDENT_FORMAT_RE.match(completion) is not None)"""


def build() -> nbformat.NotebookNode:
    params = new_code_cell(PARAMS, metadata={"tags": ["parameters"]})
    cells = [new_markdown_cell(INTRO), new_markdown_cell(PARAMS_MD), params,
             new_markdown_cell(INSTALL_MD), new_code_cell(INSTALL_CODE),
             new_markdown_cell(RECIPE_MD), new_code_cell(RECIPE_CODE),
             new_markdown_cell(DRYRUN_MD), new_code_cell(DRYRUN_CODE),
             new_markdown_cell(RUN_MD), new_code_cell(RUN_CODE),
             new_markdown_cell(REPORT_MD), new_code_cell(REPORT_CODE),
             new_markdown_cell(EXPORT_MD), new_code_cell(EXPORT_CODE),
             new_markdown_cell(SAMPLE_MD), new_code_cell(SAMPLE_CODE)]
    for i, cell in enumerate(cells):  # stable ids: regenerating gives the same file
        cell["id"] = f"cell-{i:02d}"
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    nbformat.validate(nb)
    return nb


def main(argv: list[str]) -> int:
    text = nbformat.writes(build()) + "\n"
    if "--check" in argv:
        same = PATH.is_file() and PATH.read_text(encoding="utf-8") == text
        print(f"{PATH}: {'up to date' if same else 'differs from notebooks/build_notebook.py; rebuild it'}")
        return 0 if same else 1
    PATH.write_text(text, encoding="utf-8")
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
