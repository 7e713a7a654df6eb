# The two commands a reader needs: `make review` (main job) and `make test`.
# Both create the virtual environment in .venv when it is missing or stale.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: review test bench loadtest mutation lab pg lock clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e .
	@touch $@

## Main job: run the evidence, benchmarks and notebooks, then render the review into build/site.
review: $(STAMP)
	$(BIN)/python -m workbench.build

## Tests: every finding's evidence, the registry checks, the executed notebooks.
test: $(STAMP)
	$(BIN)/python -m pytest

## Full benchmarks (longer than the ones the main job runs).
bench: $(STAMP)
	$(BIN)/python -m workbench.build --only benchmarks --full

## Locust load runs against loopback servers (bounded in users and time).
loadtest: $(STAMP)
	$(BIN)/python -m workbench.build --only loadtests

## Every declared mutant in a scratch copy: each finding's tests must catch it (records the score).
mutation: $(STAMP)
	$(BIN)/python -m workbench.build --only mutation

## JupyterLab on the notebooks (127.0.0.1, root or not), with an embedded PostgreSQL for the session.
lab: $(STAMP)
	$(BIN)/python -m workbench.lab

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
