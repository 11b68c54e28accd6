# make setup | test | test-fast | lint | demo | ablation | bench   (each creates .venv on first use)
# make slurm-deps: Debian's slurm-wlm and munge for the `slurm` test tier (apt-get; as root)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FACENET := facenet-pytorch==2.6.0

.PHONY: setup lint test test-fast demo ablation bench clean-venv slurm-deps

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

# a real single-node SLURM for tests/test_slurm.py and tests/test_cluster_pipeline.py (docs/clusters.md#local-slurm)
slurm-deps:
	command -v slurmctld > /dev/null && command -v munged > /dev/null || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge; }

ablation: setup
	$(PY) -m utils.demo.ablation

bench: setup
	$(PY) benchmarks/run_all.py

clean-venv:
	rm -rf $(VENV)
