# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
# The local CPU build; Colab keeps its own CUDA torch and never runs this file.
TORCH_SPEC ?= torch==2.13.0
NOTEBOOKS := $(VPY) -m ampxfer_lib.notebooks

.PHONY: venv test browser-test demo smoke reproduce bench bench-quick clean-demo dist colab-check

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install -q "$(TORCH_SPEC)"
	$(VPY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

test: venv
	$(VPY) -m pytest -q tests

$(VENV)/.browser-installed: $(VENV)/.installed requirements-browser.txt
	$(VPY) -m pip install -q -r requirements-browser.txt
	touch $@

# Notebooks 04 and 05 opened in JupyterLab in headless Chromium and used as a person would
# (Run All, play every player, the whole blind ABX test, the knob slider), plus a broken
# notebook the checks must fail on; screenshots in out/browser/ (about 5 min). Needs Debian's
# chromium (`apt-get install -y chromium`, as .ci/run does) or AMPXFER_CHROMIUM=/path/to/chrome.
browser-test: $(VENV)/.browser-installed
	@command -v chromium >/dev/null || test -n "$$AMPXFER_CHROMIUM" || \
		{ echo "browser-test: no chromium; install it with apt-get install -y chromium (or set AMPXFER_CHROMIUM)"; exit 1; }
	$(VPY) -m tests.browser.run --out out/browser

# The whole notebook suite on the shipped sample data at the demo budget (about 30-45 min on
# 2 CPU cores): executed notebooks, figures, results table and audio in out/demo/. A rerun
# skips finished training runs and resumes interrupted ones.
demo: venv
	$(NOTEBOOKS) run --all --out out/demo --budget demo
	@echo
	@echo "Outputs in out/demo/:"
	@echo "  executed notebooks   out/demo/0*.ipynb"
	@echo "  loss-curve figures   out/demo/study/figures/*.png"
	@echo "  results table        out/demo/study/table1.md, out/demo/study/results.csv"
	@echo "  A/B audio            out/demo/listening/"

# CI's check: every notebook top to bottom with tiny data and 2 epochs per run (a few minutes).
smoke: venv
	$(NOTEBOOKS) run --all --out out/smoke --smoke

# The article's settings (agam preset, early stopping; hours on a CPU) into out/reproduce/.
reproduce: venv
	$(NOTEBOOKS) run --all --out out/reproduce --budget article

# The speed benchmarks: ratios against reference implementations written inside each script,
# measured side by side in one run (about 15 min on 2 CPU cores; results: bench/RESULTS_*.md).
# `make bench-quick` is a few-minute look; the other studies in bench/ are run by hand.
bench: venv
	$(VPY) bench/render_speed.py
	$(VPY) bench/train_speed.py

bench-quick: venv
	$(VPY) bench/render_speed.py --quick
	$(VPY) bench/train_speed.py --quick

clean-demo:
	rm -rf out/demo

# What a user installs before (or without) a release: dist/ampxfer-<version>-py3-none-any.whl
# (the library) and dist/ampxfer-<version>.zip (source, notebooks, sample data; the Colab
# set-up cell installs from either when uploaded). See tools/dist.py.
dist: venv
	$(VPY) tools/dist.py --out dist

# Google Colab's package stack (constraints/colab.txt: its versions, with date and source) in a
# fresh virtual environment with the CPU torch, then the notebook-facing tests and the notebook
# suite in smoke mode there (CI; a few minutes, most of it downloads). Colab runs Python 3.12:
# `make colab-check PYTHON=python3.12` where there is one. Everything stays under out/.
COLAB_VENV := out/colab-venv
COLAB_PY := $(COLAB_VENV)/bin/python
COLAB_PIP := PIP_CACHE_DIR=$(CURDIR)/out/pip-cache $(COLAB_PY) -m pip install -q -c constraints/colab.txt
colab-check:
	rm -rf $(COLAB_VENV) out/colab-check
	$(PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_PIP) "$(TORCH_SPEC)"
	$(COLAB_PIP) -e . nbclient nbformat ipykernel ipywidgets pytest
	$(COLAB_PY) -m pip check
	$(COLAB_PY) -c "import sys, numpy, scipy, librosa, matplotlib, numba, IPython, ipywidgets, ipykernel, torch; \
	  print('colab-check stack: Python', sys.version.split()[0], '| numpy', numpy.__version__, '| scipy', scipy.__version__, \
	  '| librosa', librosa.__version__, '| matplotlib', matplotlib.__version__, '| numba', numba.__version__, \
	  '| IPython', IPython.__version__, '| ipywidgets', ipywidgets.__version__, '| ipykernel', ipykernel.__version__, \
	  '| torch', torch.__version__)"
	$(COLAB_PY) -m pytest -q -p no:cacheprovider tests/test_listening.py tests/test_colab.py
	PYDEVD_DISABLE_FILE_VALIDATION=1 $(COLAB_PY) -m ampxfer_lib.notebooks run --all --out out/colab-check --smoke
