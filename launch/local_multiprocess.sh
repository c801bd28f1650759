#!/usr/bin/env bash
# N JAX processes on this machine (127.0.0.1), CPU collectives over gloo: the multi-host code
# path (jax.distributed, per-process data feeding, process-0-only writes) without a cluster.
#
#   launch/local_multiprocess.sh N --config=configs/quickstart.py --workdir=/tmp/qs_mp [flags...]
#
# Env: PORT (coordinator port, default 12355), DEVICES_PER_PROCESS (simulated CPU devices per
# process, default 1), LOGDIR (default WORKDIR/launch_logs): process i's output goes to
# LOGDIR/process_i.log and its pid to LOGDIR/process_i.pid.
#
# At the end it prints one summary line per process (its FINAL / PREEMPTED / EVAL / ERROR
# line, or the last line of its log) and exits with the run's status (docs/training.md, "Exit status"):
# 0 all finished, 75 preempted (all saved; rerun the same command), else the status of the
# process that failed first. Ctrl-C or SIGTERM to this script is passed on as SIGTERM (save,
# then exit 75). When a process dies, the others stop by themselves within the coordination
# service's heartbeat timeout (vt_jax.main --heartbeat_timeout_s); any still running after
# GRACE seconds (default 60) more are killed.
set -uo pipefail
if [[ $# -lt 1 ]] || ! [[ $1 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 NUM_PROCESSES --config=FILE[:ARG] --workdir=DIR [more vt_jax.main flags]" >&2
  exit 2
fi
N=$1; shift
WORKDIR=""
for arg in "$@"; do
  case $arg in --workdir=*) WORKDIR=${arg#--workdir=} ;; esac
done
if [[ -z "$WORKDIR" && -z "${LOGDIR:-}" ]]; then
  echo "$0: give --workdir=DIR (process logs go to DIR/launch_logs)" >&2
  exit 2
fi
PORT=${PORT:-12355}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-1}
LOGDIR=${LOGDIR:-$WORKDIR/launch_logs}
PYTHON=${PYTHON:-python}
GRACE=${GRACE:-60}
mkdir -p "$LOGDIR" || exit 2

pids=()
statuses=()
forward_term() {
  echo "$0: passing SIGTERM to the processes (they save a checkpoint and exit)" >&2
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
}
trap forward_term INT TERM

for ((i = 0; i < N; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS}" JAX_PLATFORMS=cpu \
    "$PYTHON" -m vt_jax.main --coordinator_address="127.0.0.1:${PORT}" --num_processes="$N" \
    --process_id="$i" --cpu_collectives=gloo "$@" >"$LOGDIR/process_$i.log" 2>&1 &
  pids+=($!)
  statuses+=("")
  echo "${pids[$i]}" >"$LOGDIR/process_$i.pid"
done
echo "$0: $N processes started; logs in $LOGDIR" >&2

# Poll rather than `wait -n`: which process ended first matters, and this runs on any bash.
first_failed=""
deadline=""
while :; do
  running=0
  for i in "${!pids[@]}"; do
    [[ -n "${statuses[$i]}" ]] && continue
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      running=$((running + 1))
      continue
    fi
    wait "${pids[$i]}" 2>/dev/null  # (no bash "Killed ..." job line: the summary says it)
    statuses[$i]=$?
    if [[ ${statuses[$i]} -ne 0 && ${statuses[$i]} -ne 75 && -z "$first_failed" ]]; then
      first_failed=$i
      deadline=$((SECONDS + GRACE))
      echo "$0: process $i (pid ${pids[$i]}) exited with status ${statuses[$i]}; the others" \
        "should stop within the heartbeat timeout" >&2
    fi
  done
  [[ $running -eq 0 ]] && break
  if [[ -n "$deadline" && $SECONDS -ge $deadline ]]; then
    for i in "${!pids[@]}"; do
      if [[ -z "${statuses[$i]}" ]]; then
        echo "$0: process $i still running ${GRACE}s after process $first_failed ended:" \
          "killing it" >&2
        kill -KILL "${pids[$i]}" 2>/dev/null || true
      fi
    done
    deadline=""
  fi
  sleep 0.5
done

describe() {
  case $1 in
    0) echo "finished" ;;
    1) echo "failed" ;;
    2) echo "config/data/workdir error" ;;
    75) echo "preempted, checkpoint saved" ;;
    130) echo "aborted" ;;
    *) if (($1 > 128)); then echo "killed by signal $(($1 - 128))"; else echo "failed"; fi ;;
  esac
}
echo "--- summary (logs in $LOGDIR) ---"
for i in "${!pids[@]}"; do
  log="$LOGDIR/process_$i.log"
  line=$(grep -E '^(FINAL|PREEMPTED|EVAL|ERROR)' "$log" | tail -n 1)
  # A process the runtime terminated: its fatal (F...) log line says why.
  [[ -z "$line" ]] && line=$(grep -E '^F[0-9]{4} ' "$log" | head -n 1 | sed -E 's/^[^]]*\] //')
  [[ -z "$line" ]] && line=$(grep -v '^\s*$' "$log" | tail -n 1)
  echo "process $i: exit ${statuses[$i]} ($(describe "${statuses[$i]}")): ${line:0:400}"
done

status=0
for s in "${statuses[@]}"; do
  [[ $s -eq 75 && $status -eq 0 ]] && status=75
done
[[ -n "$first_failed" ]] && status=${statuses[$first_failed]}
exit $status
