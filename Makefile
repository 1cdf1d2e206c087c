# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
# The local CPU build; Colab keeps its own CUDA torch and never runs this file.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv test demo smoke reproduce bench clean-demo

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install -q "$(TORCH_SPEC)"
	$(VPY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

test: venv
	$(VPY) -m pytest -q tests
