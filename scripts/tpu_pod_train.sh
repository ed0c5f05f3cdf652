#!/usr/bin/env bash
# Training on a Cloud TPU VM pod slice: the same `jaxconv train` on every worker.
#
#   scripts/tpu_pod_train.sh TPU_NAME ZONE EXPERIMENT WORKDIR [--config.KEY=VALUE ...]         # prints the command
#   RUN=1 scripts/tpu_pod_train.sh TPU_NAME ZONE EXPERIMENT WORKDIR [--config.KEY=VALUE ...]   # runs it
#
# Each worker must have this checkout at ~/jaxconv with its .venv (jax[tpu] installed), and
# WORKDIR and the TFDS data dir must be on storage every worker sees (a Filestore or gcsfuse
# mount). jax.distributed detects the pod by itself. Preemption (SIGTERM) saves a checkpoint
# on every worker at the same step; running the command again resumes.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE EXPERIMENT WORKDIR [--config.KEY=VALUE ...]" >&2
  exit 2
fi
TPU_NAME=$1 ZONE=$2 CONFIG=$3 WORKDIR=$4
shift 4
REMOTE="cd ~/jaxconv && .venv/bin/jaxconv train --config $(printf %q "$CONFIG") --workdir $(printf %q "$WORKDIR")"
for arg in "$@"; do REMOTE+=" $(printf %q "$arg")"; done
COMMAND=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$REMOTE")
if [ "${RUN:-0}" = "1" ]; then
  "${COMMAND[@]}"
else
  printf '%q ' "${COMMAND[@]}"
  echo
fi
