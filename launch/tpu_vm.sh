#!/usr/bin/env bash
# A forgetting matrix on a Cloud TPU VM (a single host or a pod slice of several workers).
#
#   launch/tpu_vm.sh create   NAME [ACCELERATOR] [VERSION]   create the TPU VM (default v5p-32)
#   launch/tpu_vm.sh setup    NAME                           copy this repository to every worker,
#                                                            install it with jax[tpu], mount the workspace
#   launch/tpu_vm.sh run      NAME CONFIG WORKDIR [flags]    run the pipeline on all workers at once
#   launch/tpu_vm.sh logs     NAME                           the last lines of worker 0's log
#   launch/tpu_vm.sh stop     NAME                           stop the VM (disks and the workspace stay)
#   launch/tpu_vm.sh delete   NAME                           delete the VM
#
# Environment: ZONE (default us-east5-a), PROJECT (default: gcloud's), BUCKET (a gs:// bucket for
# the workspace, mounted with gcsfuse at /mnt/fj on every worker) or SHARED_DISK (a directory every
# worker already mounts, e.g. Filestore NFS). WORKDIR is then a path under the mount, e.g.
# /mnt/fj/olmo7b. Every worker runs the same command with --worker=all; jax.distributed joins them
# on its own on TPU VMs (distributed.mode=on), process 0 writes the workspace's files, orbax writes
# checkpoints from every worker, and WORKDIR/.jax_cache keeps compiled programs across runs.
#
#   ZONE=us-east5-a BUCKET=gs://my-fj launch/tpu_vm.sh create fj v5p-32
#   BUCKET=gs://my-fj launch/tpu_vm.sh setup fj
#   launch/tpu_vm.sh run fj configs/olmo_7b_dolma_flan.py /mnt/fj/olmo7b \
#       --config.model.hf_dir=/mnt/fj/models/OLMo-7B-hf --config.mesh.fsdp=16 \
#       --config.matrix.parallel_tasks=2 --config.matrix.task_submeshes=2
set -euo pipefail

ZONE=${ZONE:-us-east5-a}
MOUNT=${MOUNT:-/mnt/fj}
REMOTE_DIR=${REMOTE_DIR:-forgetting_jax}
gc() { gcloud compute tpus tpu-vm "$@" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"}; }
on_all() { local name=$1; shift; gc ssh "$name" --worker=all --command="$*"; }

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 2 ]] || usage
ACTION=$1 NAME=$2
shift 2

case $ACTION in
  create)
    gc create "$NAME" --accelerator-type="${1:-v5p-32}" --version="${2:-v2-alpha-tpuv5}"
    ;;
  setup)
    root=$(cd "$(dirname "$0")/.." && pwd)
    tar -C "$root" --exclude=.git --exclude=.venv --exclude='workdir*' -czf /tmp/fj_repo.tgz .
    gc scp /tmp/fj_repo.tgz "$NAME":/tmp/fj_repo.tgz --worker=all
    on_all "$NAME" "mkdir -p ~/$REMOTE_DIR && tar -C ~/$REMOTE_DIR -xzf /tmp/fj_repo.tgz && cd ~/$REMOTE_DIR && \
      pip install -q -U 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html && \
      pip install -q -e ."
    if [[ -n ${BUCKET:-} ]]; then
      on_all "$NAME" "sudo mkdir -p $MOUNT && sudo chown \$USER $MOUNT && \
        (command -v gcsfuse >/dev/null || (sudo apt-get update -q && sudo apt-get install -y -q gcsfuse)) && \
        (mountpoint -q $MOUNT || gcsfuse --implicit-dirs ${BUCKET#gs://} $MOUNT)"
    elif [[ -n ${SHARED_DISK:-} ]]; then
      on_all "$NAME" "test -d $SHARED_DISK"
    else
      echo "set BUCKET=gs://... or SHARED_DISK=DIR: the workspace must be shared by every worker" >&2
      exit 2
    fi
    ;;
  run)
    [[ $# -ge 2 ]] || usage
    CONFIG=$1 WORKDIR=$2
    shift 2
    extra=$(printf ' %q' "$@")
    on_all "$NAME" "cd ~/$REMOTE_DIR && mkdir -p $WORKDIR && FJ_DISTRIBUTED=on FJ_PROGRESS=0 \
      nohup forgetting-jax run --config=$CONFIG --workdir=$WORKDIR --config.mesh.num_devices=-1 \
      --config.runtime.compilation_cache=on $extra > ~/fj_run.log 2>&1 &"
    echo "started on every worker of $NAME; follow with: $0 logs $NAME"
    ;;
  logs)
    gc ssh "$NAME" --worker=0 --command="tail -n ${LINES:-40} ~/fj_run.log"
    ;;
  stop)
    gc stop "$NAME"
    ;;
  delete)
    gc delete "$NAME" --quiet
    ;;
  *)
    usage
    ;;
esac
