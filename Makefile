# The two commands a reader needs: `make review` (main job) and `make test`.
# Both create the virtual environment in .venv when it is missing or stale.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: review test bench loadtest lab pg lock clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e .
	@touch $@

## Main job: measure again (evidence, benchmarks, notebooks, load runs), record the figures in
## review/data, refresh review/*.md and its plots, build build/site and print build/review.pdf.
review: $(STAMP)
	$(BIN)/python -m workbench.build

## Tests: every finding's evidence, the registry checks, the executed notebooks, the committed
## review against its data, and the site in headless Chromium (installed here when root can).
test: $(STAMP)
	-@$(BIN)/python -m workbench.browser install
	$(BIN)/python -m pytest

## Full benchmarks (longer than the ones the main job runs).
bench: $(STAMP)
	$(BIN)/python -m workbench.build --only benchmarks --full

## Locust load runs against loopback servers (bounded in users and time).
loadtest: $(STAMP)
	$(BIN)/python -m workbench.build --only loadtests

## JupyterLab on the notebooks, with an embedded PostgreSQL for the session.
lab: $(STAMP)
	$(BIN)/python -m workbench.pg run -- $(BIN)/jupyter lab --notebook-dir=notebooks

## Start an embedded PostgreSQL, print its URL, stop it on Ctrl-C.
pg: $(STAMP)
	$(BIN)/python -m workbench.pg serve

## Re-resolve requirements.lock from pyproject.toml (needs the package registry).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install -q --upgrade pip
	.lockenv/bin/python -m pip install -q -e .
	.lockenv/bin/python -m pip freeze --exclude-editable | grep -v '^review-workbench' > requirements.lock
	rm -rf .lockenv

clean:
	rm -rf build .venv
