# Every target that runs Python first makes .venv and installs what it needs (torch pinned first,
# so that pip keeps the local build instead of downloading CUDA wheels).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Make .venv and install the package with its dev tools

train: $(STAMP) ## Run the main job: train + evaluate GaitGL on the synthetic default (CPU, minutes)
	$(PY) -m gaitgl_lightning $(ARGS)

# The fast suite and the slow tier run one pytest-xdist worker per core (at most 4); `pytest`
# alone runs serially.
XDIST := -n auto --maxprocesses=4
test: $(STAMP) ## Run the fast test suite (CPU)
	$(PY) -m pytest $(XDIST) $(ARGS)

test-all: $(STAMP) ## Run every test, the slow end-to-end ones included
	$(PY) -m pytest $(XDIST) -m "" $(ARGS)

test-slow: $(STAMP) ## Run only the slow end-to-end tests (CLI, DDP, W&B, notebooks); CI runs them
	$(PY) -m pytest $(XDIST) -m "slow and not extended" $(ARGS)

test-slurm: $(STAMP) ## Run the `slurm` tests on a local one-node SLURM cluster (root; installs it when missing)
	$(PY) -m pytest -m slurm $(ARGS)

lint: $(STAMP) ## ruff format check, ruff lint, mypy on src/
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

format: $(STAMP) ## Apply ruff formatting and fixes
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

notebooks: $(STAMP) ## Execute notebooks/ on your newest run and multirun (ARGS="--run <dir> --sweep <dir>")
	$(PY) -m gaitgl_lightning.analysis.notebooks $(ARGS)

# Every benchmark prints its ratios with their goals; the summary at the end repeats those lines.
# OPENGAIT_ROOT=<OpenGait checkout> adds the side-by-side comparison with OpenGait itself.
bench: $(STAMP) ## Run the speed / memory benchmarks (ratios against in-run baselines; OPENGAIT_ROOT=... adds OpenGait)
	@log=$$(mktemp); for f in bench/bench_*.py; do echo "== $$f" | tee -a $$log; \
	  { $(PY) $$f 2>&1; echo $$? > $$log.rc; } | tee -a $$log; \
	  [ "$$(cat $$log.rc)" = 0 ] || { rm -f $$log $$log.rc; exit 1; }; done; \
	echo "== summary: every ratio with its goal"; grep -E "goal|==" $$log; rm -f $$log $$log.rc

# On a machine with one GPU: one call, at most 8 minutes, one summary (train, pytest -m gpu, bench,
# SGD stability at the recipe's size). ARGS=--cpu: the same script as a dry run on CPU (CI runs it).
gpu-check: $(STAMP) ## The prepared GPU check (ARGS=--cpu: dry run on CPU in seconds; OPENGAIT_ROOT=... adds OpenGait)
	$(PY) scripts/gpu_check.py $(ARGS)

clean: ## Remove caches and build outputs (keeps .venv and outputs/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info

.PHONY: help install train test test-slow test-all test-slurm lint format notebooks bench gpu-check clean
