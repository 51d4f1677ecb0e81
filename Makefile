# mmdistill developer commands. `make test` installs what is missing, then runs
# the whole suite; `make install` alone is idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test test-fast demo clean-venv

install:
	VENV=$(VENV) bash tools/install.sh

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

DEMO_ARGS ?=

# DEMO_FAST=1 make demo: the few-minute variant the test suite runs
demo: install
	$(PY) demo/run_demo.py $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)
