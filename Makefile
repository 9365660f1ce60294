# Set-up and entry points. Every target installs what it needs first (into .venv), so a fresh clone
# needs only python3.11 and make.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

# No telemetry from any tool; a generous start-up budget for Prefect's temporary server.
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup demo test bench clean-data

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3.11 -m venv $(VENV) 2>/dev/null || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" setuptools wheel
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip check
	touch $@

## demo: land the default weeks of real data and run the DVC pipeline on them
demo: setup
	python -m stages.ingest
	dvc add -q data/raw
	dvc repro
	dvc push -q || echo "dvc push failed: data stays in the local cache (.dvc/cache)"
	dvc metrics show

## test: the whole suite (pure ml/, DVC pipeline on real data, bike-sharing source)
test: setup
	python -m pytest $(PYTEST_ARGS)

## bench: benchmarks, printed as ratios against a bare baseline in the same run
bench: setup
	python benchmarks/bench_dvc.py

clean-data:
	rm -rf data/raw data/prepared data/model data/eval
