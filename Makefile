# Two commands on a fresh machine:  `make pipeline` (set up + run the curriculum)
# and `make test` (set up + run the tests).  Set-up is idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
SHELL := /bin/bash
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export PYTHONUNBUFFERED := 1

TORCH := torch==2.13.0
.PHONY: setup browser lock deps pipeline test bench push pull clean

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build (docs/DESIGN.md §7).
# Then every other package at the exact version of requirements.lock, then the project itself.
$(VENV)/.installed: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	DS_BUILD_OPS=0 $(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# `dvc plots show` draws offline: Vega inlined into the page template .dvc/config names (npm registry, sha512-pinned)
PLOTS_TEMPLATE := .dvc/plots/offline.html
$(PLOTS_TEMPLATE): configs/plots/offline.py | $(VENV)/.installed
	$(PY) configs/plots/offline.py $@

setup: $(VENV)/.installed $(PLOTS_TEMPLATE)

# headless Chromium for the tests that open pages (Debian's package; needs root or an existing install)
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Re-resolve requirements.lock from pyproject.toml, keeping the locked versions that still fit
# (add --upgrade-package NAME to move one).  torch stays out of it (configs/lock/overrides.txt).
lock: setup
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra gpu --override configs/lock/overrides.txt \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --annotation-style line \
	  --custom-compile-command 'make lock' -o requirements.lock

# each stage's code deps in dvc.yaml: its script's import closure (run after adding or moving an import)
deps: setup
	$(VENV)/bin/video-r4 lineage deps --write

pipeline: setup
	dvc repro
	@echo
	@cat reports/eval_table.md
	@echo
	@echo "Where to look:"
	@echo "  dvc metrics show               every stage's metrics (metrics/*.json); dvc exp show: experiments side by side"
	@echo "  dvc plots show                 loss / reward curves, test-time scaling, accuracy per checkpoint (dvc_plots/index.html, draws offline)"
	@echo "  reports/figures/*.png          the same as pictures (stage figures); dvc exp show leads with metrics/headline.json"
	@echo "  reports/eval_table.md          the paper-style table; reports/eval/ the per-question predictions and trajectories"
	@echo "  $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db    one parent run per dvc repro, a child per stage, models video-r4-<stage>"
	@echo "      then open http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning (the runs table, not the GenAI view)"
	@echo "  $(VENV)/bin/video-r4 eval --model models:/video-r4-rl_c/latest --set synthetic --root data/built    one checkpoint, one set, from the command line"
	@echo "  $(VENV)/bin/video-r4 ask data/synthetic/videos/syn-00000.mp4 \"Which is larger: the number on the yellow scoreboard or the number on the orange price tag?\""

test: setup browser
	$(PY) -m pytest -q --durations=15

# the quick benchmarks (benchmarks/README.md lists them all, with their cost)
bench: setup
	$(PY) benchmarks/data_build.py
	@if [ -d models/rl_c ]; then $(PY) benchmarks/remote_roundtrip.py; else echo "remote_roundtrip.py: run make pipeline first"; fi
	@echo "The long one (~40 min, both cores, run it alone): $(PY) benchmarks/pipeline_timing.py --fresh-env"

# the S3 remote (README, "Remote storage"): bucket and endpoint from params.yaml or VIDEOR4_S3_BUCKET / AWS_ENDPOINT_URL
push: setup
	$(VENV)/bin/video-r4 remote push

pull: setup
	$(VENV)/bin/video-r4 remote pull

clean:
	rm -rf data metrics mlflow.db mlartifacts .cache reports dvc_plots
