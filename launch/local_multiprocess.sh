#!/usr/bin/env bash
# N JAX processes on this machine (127.0.0.1), CPU collectives over gloo: the multi-host code
# path (jax.distributed, per-process data feeding, process-0-only writes) without a cluster.
#
#   launch/local_multiprocess.sh N --config=configs/quickstart.py --workdir=/tmp/qs_mp [flags...]
#
# Env: PORT (coordinator port, default 12355), DEVICES_PER_PROCESS (simulated CPU devices per
# process, default 1). Process i's log: $LOGDIR/process_i.log (LOGDIR default: ./launch_logs).
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 NUM_PROCESSES --config=FILE[:ARG] --workdir=DIR [more vt_jax.main flags]" >&2
  exit 2
fi
N=$1; shift
PORT=${PORT:-12355}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-1}
LOGDIR=${LOGDIR:-launch_logs}
PYTHON=${PYTHON:-python}
mkdir -p "$LOGDIR"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup INT TERM
for ((i = 0; i < N; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS}" JAX_PLATFORMS=cpu \
    "$PYTHON" -m vt_jax.main --coordinator_address="127.0.0.1:${PORT}" --num_processes="$N" \
    --process_id="$i" --cpu_collectives=gloo "$@" >"$LOGDIR/process_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "process $i failed; see $LOGDIR/process_$i.log" >&2
    status=1
    cleanup  # the others would wait forever on collectives with a dead peer
  fi
done
tail -n 3 "$LOGDIR/process_0.log"
exit $status
