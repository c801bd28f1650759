#!/usr/bin/env bash
# TPU pod slice: the same command on every host of the slice; jax.distributed discovers the
# slice from the TPU metadata (--distributed=auto).
#
#   TPU=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh \
#       --config=configs/vt_r50.py:advanced --workdir=gs://my-bucket/runs/vt_r50
#
# Needs the repo at ~/vt_jax on every host (e.g. `gcloud ... scp --worker=all`) and
# `pip install -e ~/vt_jax` done there. The workdir should be a gs:// path (orbax writes
# checkpoints to GCS; every host sees it). A preempted/maintained TPU VM gets SIGTERM: the run
# saves and exits; running the same command again resumes.
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}"
: "${ZONE:?set ZONE to its zone}"
ARGS=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all \
  --command="cd ~/vt_jax && python3 -m vt_jax.main --distributed=auto ${ARGS}"
