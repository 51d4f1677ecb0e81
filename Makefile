# mmdistill developer commands. `make test` installs what is missing, then runs
# the whole suite; `make install` alone is idempotent. `make test-compat` does
# the same on the OpenMMLab install guide's stack (torch 2.1, numpy 1.x) in
# .venv-compat.
VENV ?= .venv
PY := $(VENV)/bin/python
COMPAT_VENV ?= .venv-compat
PYTEST_ARGS ?=

.PHONY: install install-compat test test-compat test-fast demo clean-venv

install:
	VENV=$(VENV) bash tools/install.sh

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

# torch 2.1.2, torchvision 0.16.2, numpy<2, mmcv 2.1.0 built against that
# torch, mmengine 0.10.7, mmdet 3.3.0, mmseg 1.2.2, mmpretrain 1.2.0
install-compat:
	VENV=$(COMPAT_VENV) TORCH_VERSION=2.1.2 \
	  CONSTRAINTS=requirements/stack-compat.txt bash tools/install.sh

test-compat: install-compat
	$(COMPAT_VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

DEMO_ARGS ?=

# DEMO_FAST=1 make demo: the under-a-minute variant the test suite runs
demo: install
	$(PY) demo/run_demo.py $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV) $(COMPAT_VENV)
