r"""Run a grid of training runs one after another: `python -m vt_jax.sweep`.

  python -m vt_jax.sweep --config=configs/ablations.py \
      --grid='tokenizer=filter,pooling,clustering;seed=0,1,2' --root=/tmp/abl
  python -m vt_jax.sweep ... --print_commands        # one shell command per run, run nothing

`--grid` is `key=v1,v2;key2=...`: the runs are the product of the lists, in order (the
first key varies slowest). A key is a config arg (appended to `--config`'s `FILE:ARG`), or
`config.a.b` for a `--config.a.b=VALUE` override. `--grid` may be given several times:
the runs are the union, in order (e.g. the baseline's tokenizers, then other tables).
A value cannot hold ',' or ';' (they separate values and keys).

Each run is `python -m vt_jax.main --config=FILE:ARG --workdir=ROOT/NAME` (NAME: the run's
grid assignments, `tokenizer=pooling,seed=1`; a path value is named by its last component,
so `--grid='config.init_from=/runs/r18_a,/runs/r18_b'` gives `config.init_from=r18_a` and
`config.init_from=r18_b`, and two paths that end alike are refused) in a subprocess, with
its output in ROOT/NAME/train.log and its state in ROOT/NAME/sweep_run.json. Re-running the same command
resumes a half-finished sweep: finished runs are skipped, an interrupted run is resumed
from its checkpoint (the training entry point's own resume), a failed one is retried. A run
that exits non-zero is reported by name with its exit status and the end of its log; the
sweep goes on with the next and exits 1 at the end if any failed.

Runs share an XLA compilation cache (ROOT/xla_cache, `--compile_cache`): the seeds of
one architecture compile once.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

from absl import app
from absl import flags

_CONFIG = None
_GRID = None
_ROOT = None
_PRINT = None
_CACHE = None
_ENTRY = None


def define_flags() -> None:
  """absl flags of the command line; defined only when run as a program, so that the
  module imports beside others (tests, the training entry point) without flag clashes."""
  global _CONFIG, _GRID, _ROOT, _PRINT, _CACHE, _ENTRY  # pylint: disable=global-statement
  _CONFIG = flags.DEFINE_string("config", None, "Config file FILE[:ARG] every run starts from.")
  _GRID = flags.DEFINE_multi_string("grid", None, "key=v1,v2;key2=... (repeatable: union).")
  _ROOT = flags.DEFINE_string("root", None, "Directory holding one workdir per run.")
  _PRINT = flags.DEFINE_bool("print_commands", False,
                             "Print each run's command (for a cluster) instead of running.")
  _CACHE = flags.DEFINE_string("compile_cache", "xla_cache",
                               "XLA compilation cache shared by the runs (relative to --root; "
                               "'' = off). An existing JAX_COMPILATION_CACHE_DIR wins.")
  _ENTRY = flags.DEFINE_string("entry_point", "vt_jax.main",
                               "Module each run executes with `python -m` (tests replace it).")


STATUS_FILE = "sweep_run.json"
LOG_FILE = "train.log"


class GridError(ValueError):
  pass


def parse_grid(spec: str) -> list[dict[str, str]]:
  """'a=1,2;b=x' -> [{'a': '1', 'b': 'x'}, {'a': '2', 'b': 'x'}] (first key slowest)."""
  runs = [{}]
  seen = set()
  for part in spec.split(";"):
    part = part.strip()
    if not part:
      continue
    key, sep, values = part.partition("=")
    key = key.strip()
    vals = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key or not vals:
      raise GridError(f"--grid={spec!r}: {part!r} is not key=v1,v2,...")
    if key in seen:
      raise GridError(f"--grid={spec!r}: key {key!r} appears twice")
    seen.add(key)
    runs = [dict(r, **{key: v}) for r in runs for v in vals]
  return runs


def run_name(assignment: dict[str, str]) -> str:
  """The run's workdir name: its assignments, a path value by its last component."""
  name = ",".join(f"{k}={os.path.basename(v.rstrip('/')) if '/' in v else v}"
                  for k, v in assignment.items())
  if not name or any(not p.partition("=")[2] for p in name.split(",")):
    raise GridError(f"cannot name a run after {assignment!r} (a value is empty or '/')")
  return name


def command(config: str, assignment: dict[str, str], workdir: str, entry: str) -> list[str]:
  """The training command of one run."""
  path, _, base = config.partition(":")
  args = [base] if base else []
  overrides = []
  for key, value in assignment.items():
    if key.startswith("config."):
      overrides.append(f"--{key}={value}")
    else:
      args.append(f"{key}={value}")
  spec = path + (":" + ",".join(args) if args else "")
  return [sys.executable, "-m", entry, f"--config={spec}", f"--workdir={workdir}"] + overrides


def check_configs(config: str, assignments) -> None:
  """Builds every run's config (and walks its --config.X paths) before any run starts, so a
  typo in the grid fails at once instead of hours in."""
  from vt_jax.config_lib import files  # pylint: disable=g-import-not-at-top
  path, _, base = config.partition(":")
  for a in assignments:
    args = ([base] if base else []) + [f"{k}={v}" for k, v in a.items()
                                       if not k.startswith("config.")]
    try:
      cfg = files.load(path + (":" + ",".join(args) if args else ""), "--config")
    except Exception as e:  # noqa: BLE001 -- reported with the run that caused it
      raise GridError(f"run {run_name(a)!r}: its config does not build: "
                      f"{type(e).__name__}: {e}") from e
    for key in (k for k in a if k.startswith("config.")):
      node = cfg
      for part in key.split(".")[1:]:
        if not hasattr(node, "keys") or part not in node:
          raise GridError(f"run {run_name(a)!r}: the config has no field {key[7:]!r}")
        node = node[part]


def _read_status(workdir: str) -> dict | None:
  try:
    with open(os.path.join(workdir, STATUS_FILE)) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def _write_status(workdir: str, status: dict) -> None:
  tmp = os.path.join(workdir, STATUS_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(status, f, indent=2)
  os.replace(tmp, os.path.join(workdir, STATUS_FILE))  # never a half-written status


def _pid_alive(pid: int | None) -> bool:
  if not pid:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _die_with_parent() -> None:
  """Linux: the run gets SIGTERM (save and exit) if the sweep dies, even by SIGKILL, so
  that a re-run sweep never trains the same workdir twice at once."""
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  except OSError:  # not Linux: the pid check in _run_one still refuses a live duplicate
    pass


def _fmt(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 60}m{seconds % 60:02d}s"


def _last_eval(workdir: str) -> dict | None:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  last = None
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      if record.get("split") == "eval":
        last = record
  return last


def _tail(path: str, lines: int = 8) -> str:
  try:
    with open(path, errors="replace") as f:
      return "".join(f.readlines()[-lines:])
  except FileNotFoundError:
    return "(no log)\n"


class _Stop(Exception):
  pass


def _run_one(i: int, n: int, name: str, cmd: list[str], workdir: str, env: dict) -> str:
  """Runs (or skips) one run; returns 'done', 'skipped' or 'failed'."""
  status = _read_status(workdir)
  prefix = f"[{i}/{n}] {name}:"
  if status and status.get("status") == "done":
    note = "" if status.get("command") == cmd[1:] else (
        f" (with a different command: {shlex.join(status.get('command', []))}; delete "
        f"{workdir} to rerun it)")
    print(f"{prefix} done earlier, skipped{note}", flush=True)
    return "skipped"
  if status and status.get("status") == "running":
    # A run whose sweep was killed gets SIGTERM and saves before exiting: give it time.
    deadline = time.time() + 60
    while _pid_alive(status.get("pid")) and time.time() < deadline:
      time.sleep(1)
  if status and status.get("status") == "running" and _pid_alive(status.get("pid")):
    raise _Stop(f"{prefix} process {status['pid']} is still training {workdir} (another "
                "sweep?); stop it first")
  attempt = (status or {}).get("attempts", 0) + 1
  why = {None: "started", "running": "resuming (interrupted earlier)",
         "interrupted": "resuming (interrupted earlier)",
         "failed": f"retrying (attempt {attempt - 1} exited {(status or {}).get('exit_code')})"}
  print(f"{prefix} {why.get((status or {}).get('status'), 'started')}", flush=True)
  os.makedirs(workdir, exist_ok=True)
  record = dict(status="running", command=cmd[1:], attempts=attempt,
                wall_seconds=(status or {}).get("wall_seconds", 0.0))
  t0 = time.time()
  with open(os.path.join(workdir, LOG_FILE), "a") as log:
    log.write(f"\n=== vt_jax.sweep attempt {attempt}: {shlex.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=_die_with_parent)
    _write_status(workdir, dict(record, pid=proc.pid))
    try:
      code = proc.wait()
    except _Stop:
      # The sweep is being stopped: let the run save its checkpoint and exit (between two
      # training steps); a second signal kills it at once.
      proc.send_signal(signal.SIGTERM)
      print(f"{prefix} stopping: the run saves a checkpoint and exits (signal the sweep "
            "again to kill it now)", flush=True)
      while True:
        try:
          proc.wait()
          break
        except _Stop:
          proc.kill()
      record.update(status="interrupted", wall_seconds=record["wall_seconds"] + time.time() - t0)
      _write_status(workdir, record)
      print(f"{prefix} interrupted; re-run the sweep to resume it", flush=True)
      raise
  record["wall_seconds"] += time.time() - t0
  record["exit_code"] = code
  if code == 0:
    record["status"] = "done"
    _write_status(workdir, record)
    ev = _last_eval(workdir) or {}
    metrics = "  ".join(f"{k} {ev[k]:.4f}" for k in ("top1", "ema_top1") if k in ev)
    print(f"{prefix} done in {_fmt(time.time() - t0)}  {metrics}", flush=True)
    return "done"
  record["status"] = "failed"
  _write_status(workdir, record)
  how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
  print(f"{prefix} FAILED ({how}) after {_fmt(time.time() - t0)}; end of "
        f"{os.path.join(workdir, LOG_FILE)}:\n{_tail(os.path.join(workdir, LOG_FILE))}",
        flush=True)
  return "failed"


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  assignments, names = [], {}
  try:
    for spec in _GRID.value:
      for a in parse_grid(spec):
        name = run_name(a)
        if name in names and names[name] != a:
          raise GridError(f"runs {names[name]!r} and {a!r} would share the workdir "
                          f"{name!r}: give the paths different last components")
        if name not in names:  # the union: a run listed by two grids runs once
          names[name] = a
          assignments.append(a)
  except GridError as e:
    raise app.UsageError(str(e)) from e
  if not assignments:
    raise app.UsageError("--grid holds no runs")
  root = os.path.abspath(_ROOT.value)
  runs = [(run_name(a), command(_CONFIG.value, a, os.path.join(root, run_name(a)),
                                _ENTRY.value), os.path.join(root, run_name(a)))
          for a in assignments]
  if _PRINT.value:
    for _, cmd, _ in runs:
      print(shlex.join(["python"] + cmd[1:]))
    return 0
  try:
    check_configs(_CONFIG.value, assignments)
  except GridError as e:
    print(f"FATAL {e}", file=sys.stderr, flush=True)
    return 2
  os.makedirs(root, exist_ok=True)
  env = dict(os.environ)
  if _CACHE.value and "JAX_COMPILATION_CACHE_DIR" not in env:
    env.update(JAX_COMPILATION_CACHE_DIR=os.path.join(root, _CACHE.value),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")

  def stop(signum, frame):  # pylint: disable=unused-argument
    raise _Stop(f"signal {signum}")

  signal.signal(signal.SIGTERM, stop)
  signal.signal(signal.SIGINT, stop)
  print(f"sweep: {len(runs)} runs in {root}", flush=True)
  outcome = {}
  t0 = time.time()
  try:
    for i, (name, cmd, workdir) in enumerate(runs, 1):
      outcome[name] = _run_one(i, len(runs), name, cmd, workdir, env)
  except _Stop as e:
    print(f"sweep stopped ({e}); re-run the same command to resume", flush=True)
    return 130
  counts = {k: sum(v == k for v in outcome.values()) for k in ("done", "skipped", "failed")}
  failed = [n for n, v in outcome.items() if v == "failed"]
  print(f"sweep: {len(runs)} runs in {_fmt(time.time() - t0)}: {counts['done']} done, "
        f"{counts['skipped']} done earlier, {counts['failed']} failed"
        + (f": {', '.join(failed)}" if failed else ""), flush=True)
  return 1 if failed else 0


if __name__ == "__main__":
  from vt_jax import runtime  # pylint: disable=g-import-not-at-top
  runtime.setup(sys.argv)  # quiet console, as the runs' own entry point
  define_flags()
  flags.mark_flags_as_required(["config", "grid", "root"])
  app.run(lambda argv: sys.exit(main(argv)))
