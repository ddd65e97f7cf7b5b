#!/usr/bin/env bash
# The pipeline on this machine's CPUs, as one process or as a rehearsal of a multi-host run.
#
#   launch/local_cpu.sh CONFIG WORKDIR [NUM_PROCESSES] [-- extra forgetting-jax flags]
#
#   launch/local_cpu.sh configs/demo.py workdir/demo
#   launch/local_cpu.sh configs/demo.py workdir/demo2 2 -- --config.train.steps=10
#
# NUM_PROCESSES > 1 starts that many local processes joined by jax.distributed (coordinator on
# localhost, gloo collectives between CPU processes), each with DEVICES_PER_PROCESS virtual CPU
# devices (default 2), and a mesh over all of them: the code paths of a TPU pod or a GPU cluster
# (each process feeds its own rows, orbax saves collectively, only process 0 writes files). The
# logs of process i go to WORKDIR/process_i.log.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
CONFIG=$1 WORKDIR=$2
NUM_PROCESSES=1
shift 2
if [[ $# -gt 0 && $1 != "--" ]]; then NUM_PROCESSES=$1; shift; fi
if [[ $# -gt 0 && $1 == "--" ]]; then shift; fi
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-2}
FJ=${FJ:-forgetting-jax}
export JAX_PLATFORMS=cpu

if [[ $NUM_PROCESSES -eq 1 ]]; then
  exec $FJ run --config="$CONFIG" --workdir="$WORKDIR" "$@"
fi

mkdir -p "$WORKDIR"
PORT=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}
export XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS ${XLA_FLAGS:-}"
export JAX_COORDINATOR_ADDRESS=localhost:$PORT JAX_NUM_PROCESSES=$NUM_PROCESSES FJ_PROGRESS=0
pids=()
for ((i = 0; i < NUM_PROCESSES; i++)); do
  JAX_PROCESS_ID=$i $FJ run --config="$CONFIG" --workdir="$WORKDIR" --config.mesh.num_devices=-1 "$@" \
    >"$WORKDIR/process_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for _ in "${pids[@]}"; do
  if ! wait -n; then
    status=1
    kill "${pids[@]}" 2>/dev/null || true  # one process failed: the others would wait for it forever
    break
  fi
done
wait 2>/dev/null || true
tail -n 5 "$WORKDIR/process_0.log"
exit $status
