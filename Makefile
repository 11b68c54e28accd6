# make setup | test | test-fast | lint | demo | ablation | bench   (each creates .venv on first use)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FACENET := facenet-pytorch==2.6.0

.PHONY: setup lint test test-fast demo ablation bench clean-venv

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps $(FACENET)
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(PY) -m ruff check .

# the whole suite (what CI runs), after the lint
test: lint
	$(PY) -m pytest

# while working: leaves out the end-to-end, multi-process and SLURM tests (marked slow, slurm)
test-fast: setup
	$(PY) -m pytest -m "not gpu and not slow and not slurm"

demo: setup
	$(PY) demo.py

ablation: setup
	$(PY) -m utils.demo.ablation

bench: setup
	$(PY) benchmarks/run_all.py

clean-venv:
	rm -rf $(VENV)
