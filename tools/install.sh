#!/usr/bin/env bash
# Idempotent installer for mmdistill and the OpenMMLab stack it builds on.
#
# Creates $VENV (default .venv), installs torch only when no torch is
# importable (a base interpreter that already has torch, e.g. a CUDA box, is
# reused through --system-site-packages and mmcv is built against it), builds
# mmcv with its C++/CUDA ops from source unless `import mmcv.ops` already
# works (the wheel is cached per torch build), then installs mmengine, mmdet,
# mmsegmentation, mmpretrain and the test/demo extras within the ranges of
# requirements/, and mmdistill itself without touching its dependencies.
#
# Settings (environment):
#   VENV           the venv to create/complete (default .venv)
#   PYTHON         interpreter that creates it (default python3)
#   TORCH_VERSION  torch to install when none is importable (default 2.13.0)
#   CONSTRAINTS    a pip constraints file applied to every install, e.g.
#                  requirements/stack-compat.txt (the OpenMMLab install-guide
#                  stack that `make test-compat` runs on)
#   WHEEL_CACHE    where built mmcv wheels are kept, one folder per torch
#                  build (default ~/.cache/mmdistill/wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
BASE_PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
MMCV_VERSION=${MMCV_VERSION:-2.1.0}
MMENGINE_SPEC=">=0.10.0,<1.0.0"
WHEEL_CACHE=${WHEEL_CACHE:-$HOME/.cache/mmdistill/wheels}
CONSTRAINTS=${CONSTRAINTS:-}

log() { echo "[mmdistill install] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  if "$BASE_PYTHON" -c "import torch" 2>/dev/null; then
    log "base interpreter already has torch; creating $VENV with system site-packages to keep it"
    "$BASE_PYTHON" -m venv --system-site-packages "$VENV"
  else
    log "creating $VENV"
    "$BASE_PYTHON" -m venv "$VENV"
  fi
fi
PY="$(cd "$VENV" && pwd)/bin/python"  # absolute: some checks run from /
PIP=("$PY" -m pip --disable-pip-version-check -q)

# pip install, without the machine's "Location ... is ignored" noise; keeps
# pip's exit status (pipefail).
CONSTRAINT_ARGS=()
if [ -n "$CONSTRAINTS" ]; then
  CONSTRAINT_ARGS=(-c "$(cd "$(dirname "$CONSTRAINTS")" && pwd)/$(basename "$CONSTRAINTS")")
  log "every install constrained by $CONSTRAINTS"
fi
pip_install() {
  "${PIP[@]}" install "${CONSTRAINT_ARGS[@]}" "$@" 2>&1 | { grep -v "^WARNING: Location '" || true; }
}

if "$PY" -c "import torch" 2>/dev/null; then
  log "torch $("$PY" -c 'import torch; print(torch.__version__)') present, keeping it"
else
  log "installing torch==$TORCH_VERSION"
  pip_install "torch==$TORCH_VERSION"
fi

# numpy first (within CONSTRAINTS): torchvision and mmcv's build import it
# numpy, pillow and requests first (within CONSTRAINTS): torchvision
# (installed without dependencies below) and mmcv's build import them
if ! "$PY" -c "import numpy, PIL, requests" 2>/dev/null; then
  log "installing numpy, pillow and requests"
  pip_install numpy pillow requests
fi

# mmpretrain imports torchvision. The index's torchvision wheels are built
# against CUDA torch: with a CPU torch their C++ ops cannot load, which
# torchvision tolerates except for two fake-op registrations (nms, qnms) that
# its 0.28 release does not guard by `_has_ops()` as it guards the others.
# mmpretrain uses only torchvision's Python parts (transforms, box helpers),
# so the wheel is installed without dependencies (it would replace torch)
# and those two registrations get the same guard.
if (cd / && "$PY" -c "import torchvision") 2>/dev/null; then
  log "torchvision $("$PY" -c 'import torchvision; print(torchvision.__version__)') present"
else
  TV_VERSION=$("$PY" -c "import torch; m = int(torch.__version__.split('.')[1]); print(f'0.{m + 15}.*')")
  log "installing torchvision==$TV_VERSION (for mmpretrain) without dependencies"
  pip_install --no-deps "torchvision==$TV_VERSION"
  if ! TV_ERROR=$(cd / && "$PY" -c "import torchvision" 2>&1); then
    if echo "$TV_ERROR" | grep -q "torchvision::nms"; then
      log "torchvision's C++ ops do not load with this torch; guarding its nms/qnms fake registrations"
      "$PY" tools/misc/guard_torchvision_fake_ops.py
    else
      echo "$TV_ERROR" | tail -5
      log "torchvision does not import (above)"; exit 1
    fi
  fi
fi

if "$PY" -c "import mmcv.ops" 2>/dev/null; then
  log "mmcv with ops present, skipping the build"
else
  # mmcv's compiled ops link against one torch build: a wheel built for
  # another torch fails at import (undefined symbol). pip's own wheel cache
  # keys mmcv only by its version, so the wheel is built with pip's cache off
  # into our own cache, keyed by the torch build and Python it was built for.
  MMCV_KEY=$("$PY" -c "import sys, torch; print(f'torch{torch.__version__}-cp{sys.version_info[0]}{sys.version_info[1]}')")
  MMCV_DIR="$WHEEL_CACHE/mmcv-$MMCV_VERSION-$MMCV_KEY"
  if ! ls "$MMCV_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    # mmcv's setup.py imports pkg_resources (removed in setuptools>=70);
    # torch's metadata asks for a newer setuptools, so this is a separate
    # step and the newer one is put back after the build.
    pip_install numpy "mmengine$MMENGINE_SPEC" wheel ninja packaging
    pip_install "setuptools<70" 2>&1 | grep -v "dependency conflicts\|requires setuptools\|resolver does not" || true
    if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
      FORCE_CUDA=1
    else
      FORCE_CUDA=0
    fi
    log "building mmcv==$MMCV_VERSION with ops against $MMCV_KEY (FORCE_CUDA=$FORCE_CUDA); ~8-10 min on 2 cores, once per torch build"
    rm -rf "$MMCV_DIR.tmp"
    MMCV_WITH_OPS=1 FORCE_CUDA=$FORCE_CUDA MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      "${PIP[@]}" wheel --no-cache-dir --no-build-isolation --no-deps \
      -w "$MMCV_DIR.tmp" "mmcv==$MMCV_VERSION"
    mv "$MMCV_DIR.tmp" "$MMCV_DIR"
  else
    log "mmcv==$MMCV_VERSION wheel for $MMCV_KEY found in $MMCV_DIR"
  fi
  pip_install "$MMCV_DIR"/mmcv-*.whl
  "$PY" -c "import mmcv.ops" || { log "mmcv.ops does not import with this torch; remove $MMCV_DIR and run again"; exit 1; }
fi
# mmengine imports pkg_resources (to find mmdet::/mmseg:: configs), which
# setuptools 81 removed; torch 2.13 asks for setuptools >= 77.
if ! (cd / && "$PY" -c "import pkg_resources; import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 77)") 2>/dev/null; then
  log "installing setuptools>=77,<81 (torch needs >=77, mmengine needs pkg_resources)"
  pip_install "setuptools>=77,<81"
fi

# (run from / so that the checkout itself is not what gets imported)
# Ranges, not pins: an environment that already satisfies them is kept as it
# is (pip installs only what is missing or out of range).
if (cd / && "$PY" -c "import mmengine, mmdet, mmseg, mmpretrain, ftfy, regex, matplotlib, skimage, pytest, xdist") 2>/dev/null; then
  log "mmengine, mmdet, mmseg, mmpretrain and test requirements present"
else
  log "installing mmengine, mmdet, mmsegmentation, mmpretrain, runtime, demo and test requirements (requirements/)"
  pip_install -r requirements/mminstall.txt -r requirements/runtime.txt \
    -r requirements/cls.txt -r requirements/demo.txt -r requirements/tests.txt
fi
if [ "$("$PY" -m pip show -f mmdistill 2>/dev/null | grep -c "$(pwd)")" -gt 0 ] \
   && [ -L mmdistill/.mim/configs ]; then
  # links, not copies: a wheel built from this checkout (pip install .,
  # pip wheel .) leaves copies there that would go stale
  log "mmdistill installed from this checkout"
else
  log "installing mmdistill (editable) from $(pwd)"
  pip_install --no-build-isolation --no-deps -e .
fi
log "done: $("$PY" -c 'import torch, mmcv, mmdet, mmseg, mmpretrain; print("torch", torch.__version__, "mmcv", mmcv.__version__, "mmdet", mmdet.__version__, "mmseg", mmseg.__version__, "mmpretrain", mmpretrain.__version__)')"
