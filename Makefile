# Set-up and entry points. Every target installs what it needs first (into .venv), so a fresh clone
# needs only python3.11 and make.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test files run on 2 processes (a module's tests stay together, so its stack or fixtures start once): the e2e
# stack scenario on one, the rest beside it. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
# ... each on one BLAS/OpenMP thread: two test processes on two cores, each spawning a thread per core, spend more
# time waiting on each other's threads than computing (one weekly flow run beside another busy process: 29 s -> 20 s)
TEST_ENV = OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

# No telemetry from any tool; a generous start-up budget for Prefect's temporary server.
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# The demo's flow runs stay in the project, so `make ui-prefect` shows them afterwards.
export PREFECT_HOME ?= $(CURDIR)/.prefect

.PHONY: setup browser demo dvc-demo test test-fast bench up down status serve ui-prefect ui-mlflow clean-data

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3.11 -m venv $(VENV) 2>/dev/null || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" setuptools wheel
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip check
	touch $@

## demo: replay 6 real weeks through the weekly flow in the demo's workspace .demo/ (a copy of the pipeline with its
## own git repo, DVC and MLflow stores: this checkout stays as it is); local Prefect API
demo: setup
	python -m cli.replay

## dvc-demo: the DVC pipeline alone on the default window (no Prefect, no MLflow)
dvc-demo: setup
	dvc repro
	dvc push -q || echo "dvc push failed: data stays in the local cache (.dvc/cache)"
	dvc metrics show

## browser: Debian's chromium (the browser checks) and prometheus (the scrape test) for the e2e tier
## (root, or sudo without a password)
browser:
	@{ command -v chromium && command -v prometheus; } >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium \
	    prometheus >/dev/null; }
	@chromium --version
	@prometheus --version 2>&1 | head -1

## test: the whole suite: ml/, DVC on real data, flows (Prefect harness), e2e (servers + browser)
test: setup browser
	python -m ruff check .
	$(TEST_ENV) python -m pytest $(XDIST) $(PYTEST_ARGS)

## test-fast: everything but the e2e tier (no servers, no browser)
test-fast: setup
	python -m ruff check .
	$(TEST_ENV) python -m pytest $(XDIST) -m "not e2e" $(PYTEST_ARGS)

## up / down / status: the local stack (Prefect server + worker, MLflow server, deployments)
up: setup
	python -m deployments.stack up

down:
	python -m deployments.stack down

status:
	python -m deployments.stack status

## serve: the prediction service alone on 127.0.0.1:8000 (@champion, @challenger during an A/B experiment)
serve: setup
	python -m serving

## bench: benchmarks, printed as ratios against a bare baseline in the same run
bench: setup
	python benchmarks/bench_dvc.py
	python benchmarks/bench_drift.py
	python benchmarks/bench_decisions.py
	python benchmarks/bench_loop.py
	python benchmarks/bench_gate.py
	python benchmarks/bench_alarms.py
	python benchmarks/bench_search.py
	python benchmarks/bench_scale.py
	python benchmarks/bench_ablog.py
	python benchmarks/bench_flow.py
	python benchmarks/bench_deploy.py
	python benchmarks/bench_serve.py

## ui-prefect / ui-mlflow: look at the demo's runs (Ctrl-C to stop); `make ui-mlflow UI_PROJECT=.` for this
## checkout's own runs
UI_PROJECT ?= .demo
ui-prefect: setup
	prefect server start --host 127.0.0.1 --port 4200

ui-mlflow: setup
	mlflow ui --backend-store-uri sqlite:///$(abspath $(UI_PROJECT))/mlflow.db --host 127.0.0.1 --port 5000

## clean-data: forget every landed batch, model, run and registry entry of this checkout
clean-data:
	rm -rf data/raw data/raw.dvc data/quarantine data/archive data/logs data/staging data/prepared data/model data/eval data/runs data/demo data/ab dvc.lock week.yaml .demo \
	       mlflow.db mlartifacts .prefect
