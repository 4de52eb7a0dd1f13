#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with varprinciple, torch (CPU build),
# the Dask extra and the test tools. Usage: bash scripts/setup.sh
#   TORCH_SPEC   torch requirement to install first (default torch==2.13.0, the CPU wheel
#                available to this project's machines; elsewhere set TORCH_INDEX_URL)
#   TORCH_INDEX_URL  e.g. https://download.pytorch.org/whl/cpu to get a CPU build from PyTorch's index
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  .venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}" --index-url "$TORCH_INDEX_URL"
else
  .venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
fi
.venv/bin/python -m pip install --quiet -e ".[collect,dask,test]"
.venv/bin/python -c "import varprinciple, torch, distributed; print('varprinciple', varprinciple.__version__, '| torch', torch.__version__, '| distributed', distributed.__version__)"
