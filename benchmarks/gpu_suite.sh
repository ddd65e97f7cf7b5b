#!/usr/bin/env bash
# The GPU measurement of BENCHMARKS.md ("GPU (prepared)") on a machine with an NVIDIA GPU, also
# one without network access: runs benchmarks/gpu_suite.py from this checkout (no install) and
# leaves results.json, summary.md and log.txt in $OUT.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_suite.sh [--budget=540] [--phases=score_auto,train_torch,...]
#
# Python packages the machine lacks can be carried as wheels in .whl/ (installed into a private
# directory first); only the task_parallel phase needs one beyond jax, flax, optax, orbax, torch
# and transformers: ml_collections.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_suite_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fj_site .whl/*.whl \
    && export PYTHONPATH=/tmp/fj_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 FJ_PROGRESS=0 TOKENIZERS_PARALLELISM=false TF_CPP_MIN_LOG_LEVEL=2
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.85}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"
$PY -c "import jax, forgetting_jax.score.scorer; print('jax', jax.__version__, jax.devices())" || exit 1
exec $PY benchmarks/gpu_suite.py --out="$OUT" "$@"
