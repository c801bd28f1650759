#!/usr/bin/env bash
# Train on a Cloud TPU pod slice from this checkout, the whole job (as big_vision's README does):
#   1. (only with CREATE=TYPE) create the TPU VM slice;
#   2. copy this checkout's code to every worker (~/vt_jax);
#   3. install it there with the TPU extra (`pip install -e '.[tpu]'`) into ~/vt_venv, a Python
#      $PYTHON_VERSION venv made with uv (TPU VM images ship an older Python than vt_jax needs);
#   4. run the same `python -m vt_jax.main --distributed=auto ...` on every worker (--worker=all):
#      jax.distributed finds the other hosts from the TPU metadata.
#
#   TPU=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh \
#       --config=configs/vt_r50.py:recipe=advanced --workdir=gs://my-bucket/runs/vt_r50
#   TPU=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh --dry-run \
#       --config=configs/vt_r50.py:recipe=advanced --workdir=gs://my-bucket/runs/vt_r50
#
# --dry-run prints every command (shell-quoted, runnable as printed) and runs none.
# Env: TPU, ZONE (required); PROJECT (default: gcloud's configured project); CREATE (an
# accelerator type, e.g. v4-32: create the slice first); TPU_VERSION (VM image for CREATE,
# default tpu-ubuntu2204-base); PYTHON_VERSION (default 3.12).
#
# The workdir must be a gs:// path: every worker reads the checkpoints and process 0 writes
# them, and a TPU VM's disk does not outlive a preemption. Running the same command again
# (after a preemption, maintenance or a failure) copies and installs again and resumes from the
# workdir's latest checkpoint. This script's exit status is the remote run's (docs/training.md:
# "Exit status").
set -euo pipefail

DRY_RUN=0
if [[ ${1:-} == --dry-run ]]; then
  DRY_RUN=1
  shift
fi
if [[ $# -eq 0 ]]; then
  echo "usage: TPU=NAME ZONE=ZONE $0 [--dry-run] --config=FILE[:ARG] --workdir=gs://BUCKET/DIR" \
    "[more vt_jax.main flags]" >&2
  exit 2
fi
: "${TPU:?set TPU to the TPU VM (slice) name}"
: "${ZONE:?set ZONE to its zone}"
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
TPU_VERSION=${TPU_VERSION:-tpu-ubuntu2204-base}

workdir=""
prev=""
for arg in "$@"; do
  case $arg in
    --workdir=*) workdir=${arg#--workdir=} ;;
  esac
  if [[ $prev == --workdir ]]; then workdir=$arg; fi
  prev=$arg
done
if [[ $workdir != gs://* ]]; then
  echo "$0: --workdir=${workdir:-<missing>} must be a gs:// bucket path: every worker must see" \
    "the checkpoints, and a TPU VM's own disk does not survive a preemption" >&2
  exit 2
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARBALL=${TMPDIR:-/tmp}/vt_jax_${TPU}.tar.gz
GCLOUD=(gcloud compute tpus tpu-vm)
WHERE=("--zone=$ZONE")
if [[ -n ${PROJECT:-} ]]; then WHERE+=("--project=$PROJECT"); fi

# Shell-quote one word only where needed, so printed commands stay readable and runnable.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

run() {
  if ((DRY_RUN)); then
    local sep=""
    for word in "$@"; do
      printf '%s' "$sep"
      quote "$word"
      sep=" "
    done
    printf '\n'
  else
    "$@"
  fi
}

# The remote commands: $HOME and ~ expand on the worker, not here.
# shellcheck disable=SC2016
SETUP='rm -rf ~/vt_jax && mkdir -p ~/vt_jax && tar -xzf ~/vt_jax.tar.gz -C ~/vt_jax'\
' && { [ -x ~/.local/bin/uv ] || python3 -m pip install --user --quiet uv; }'\
" && ~/.local/bin/uv venv --quiet --allow-existing --python $PYTHON_VERSION ~/vt_venv"\
' && ~/.local/bin/uv pip install --quiet --python ~/vt_venv/bin/python -e "$HOME/vt_jax[tpu]"'
ARGS=$(printf '%q ' "$@")
TRAIN="cd ~/vt_jax && ~/vt_venv/bin/python -m vt_jax.main --distributed=auto ${ARGS% }"

if [[ -n ${CREATE:-} ]]; then
  run "${GCLOUD[@]}" create "$TPU" "${WHERE[@]}" "--accelerator-type=$CREATE" \
    "--version=$TPU_VERSION"
fi
# What a worker needs to install and run: the package, the configs and the build files.
run tar -czf "$TARBALL" -C "$ROOT" --exclude=__pycache__ --exclude='*.egg-info' \
  vt_jax configs setup.cfg pyproject.toml README.md
run "${GCLOUD[@]}" scp "$TARBALL" "$TPU:vt_jax.tar.gz" "${WHERE[@]}" --worker=all
run "${GCLOUD[@]}" ssh "$TPU" "${WHERE[@]}" --worker=all "--command=$SETUP"
run "${GCLOUD[@]}" ssh "$TPU" "${WHERE[@]}" --worker=all "--command=$TRAIN"
