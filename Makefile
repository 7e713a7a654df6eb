# The two commands a reader needs: `make review` (main job) and `make test`.
# Both create the virtual environment in .venv when it is missing or stale; `make test` also
# builds the task's 2020 stack in .venv2020 when a Python 3.8 is found (see README).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The task's stack: CPython 3.8 with mid-2020 libraries (requirements-2020.lock).
VENV2020  := .venv2020
STAMP2020 := $(VENV2020)/.installed
PYTHON2020 ?=

.PHONY: review test bench loadtest mutation lab pg lock stack2020 lock2020 clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e .
	@touch $@

## The 2020 stack in .venv2020, when a Python 3.8 is found (PYTHON2020=..., else python3.8 on
## PATH, pyenv, uv); without one, say so: the tests then run on today's stack only.
stack2020: $(STAMP)
	@py="$(PYTHON2020)"; [ -n "$$py" ] || py=$$($(BIN)/python -m workbench.stacks find-python); \
	if [ -z "$$py" ]; then \
	  echo "*** Python 3.8 not found: the 2020 stack will not run; the evidence is checked on today's stack only (README: 'The task's 2020 stack')"; \
	else $(MAKE) --no-print-directory $(STAMP2020) PYTHON2020="$$py"; fi

$(STAMP2020): requirements-2020.lock
	@test -x $(VENV2020)/bin/python || $(PYTHON2020) -m venv $(VENV2020)
	$(VENV2020)/bin/python -m pip install -q -r requirements-2020.lock
	@touch $@

## Main job: measure again (evidence on both stacks, benchmarks, notebooks, load runs), record the
## figures in review/data, refresh review/*.md and its plots, build build/site and print build/review.pdf.
review: $(STAMP) stack2020
	$(BIN)/python -m workbench.build

## Tests: every finding's evidence (the as-given side on both stacks), the registry checks, the
## executed notebooks, the committed review against its data, and the site in headless Chromium
## (installed here when root can).
test: $(STAMP) stack2020
	-@$(BIN)/python -m workbench.browser install
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

## Re-resolve requirements-2020.lock from requirements-2020.in with Python 3.8.
lock2020: $(STAMP)
	py="$(PYTHON2020)"; [ -n "$$py" ] || py=$$($(BIN)/python -m workbench.stacks find-python) || exit 1; \
	rm -rf .lockenv2020 && $$py -m venv .lockenv2020 && \
	.lockenv2020/bin/python -m pip install -q -r requirements-2020.in && \
	{ echo "# pip freeze of .venv2020 (Python 3.8), from requirements-2020.in by \`make lock2020\`."; \
	  .lockenv2020/bin/python -m pip freeze; } > requirements-2020.lock.new && \
	mv requirements-2020.lock.new requirements-2020.lock; rm -rf .lockenv2020

clean:
	rm -rf build .venv .venv2020
