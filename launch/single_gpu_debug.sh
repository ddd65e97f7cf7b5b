#!/usr/bin/env bash
# Fast feedback on one GPU: a small Hugging Face model, a few demo tasks, short runs.
#
#   launch/single_gpu_debug.sh HF_MODEL_DIR WORKDIR [extra forgetting-jax flags]
#
#   launch/single_gpu_debug.sh /models/pythia-160m workdir/debug
#   launch/single_gpu_debug.sh /models/OLMo-1B-hf workdir/olmo --config.train.steps=20
#   GPU=1 COMMAND=finetune launch/single_gpu_debug.sh /models/pythia-160m workdir/debug --task=add
#
# Runs `forgetting-jax $COMMAND` (default: run) with configs/single_gpu_debug.py on GPU $GPU
# (default 0). The XLA compilation cache lives in WORKDIR/.jax_cache, so a second invocation skips
# compilation; JAX takes MEM_FRACTION of the GPU's memory (default 0.9). FJ_ATTENTION=xla turns
# the cuDNN attention kernel off (models/attention.py).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
MODEL=$1 WORKDIR=$2
shift 2
export CUDA_VISIBLE_DEVICES=${GPU:-0}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-0.9}
export FJ_DISTRIBUTED=off
# Single-GPU scheduling: overlap host transfers with compute; keep autotuning on (default).
export XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true ${XLA_FLAGS:-}"
exec ${FJ:-forgetting-jax} "${COMMAND:-run}" --config=configs/single_gpu_debug.py --workdir="$WORKDIR" \
  --config.model.hf_dir="$MODEL" --config.runtime.compilation_cache=on "$@"
