#!/usr/bin/env bash
# GPU check of `collect --device cuda` (issue 10), one short call on a machine with a CUDA GPU
# (about 3-5 minutes). Uses the python3 that holds a CUDA torch there (nothing is installed:
# the package runs from this checkout through PYTHONPATH). Optional: to include the Dask part,
# carry wheels of dask, distributed and their missing dependencies in .whl/ (see docs/cluster.md).
# Results: $OUT/gpu_check.json (OUT defaults to ./gpu_check_out) and the printed lines.
#   bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, numpy, scipy, pandas, pyarrow, statsmodels, sklearn; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
exec "$PY" scripts/gpu_check.py
