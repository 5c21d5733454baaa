# Two commands on a fresh machine:  `make pipeline` (set up + run the curriculum)
# and `make test` (set up + run the tests).  Set-up is idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
SHELL := /bin/bash
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export PYTHONUNBUFFERED := 1

.PHONY: setup pipeline test bench clean

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build (DESIGN.md §7).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	DS_BUILD_OPS=0 $(PY) -m pip install -q -e '.[dev,gpu]'
	touch $@

setup: $(VENV)/.installed

pipeline: setup
	dvc repro
	@echo
	dvc metrics show
	@echo
	@echo "Results: dvc metrics show | dvc exp show | video-r4 data show drp-000000"
	@echo "MLflow UI: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db"

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/data_build.py

clean:
	rm -rf data metrics mlflow.db mlartifacts .cache reports/render
