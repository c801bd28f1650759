"""Failures as a user meets them, through `python -m vt_jax.main`.

A damaged newest checkpoint, every checkpoint damaged, a changed config over an existing
workdir, errors that must stop the run before any work, SIGTERM and Ctrl-C, a read-only
workdir for --mode=eval. One tiny quickstart run (12 steps, width 4) is shared.
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--config=configs/quickstart.py:width=4", "--config.num_train_steps=12",
         "--config.log_every_steps=4", "--config.checkpoint.every_steps=4",
         "--config.eval_every_epochs=100"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env():
  # One CPU device, as on a laptop; the shared compile cache (tests/conftest.py)
  # makes the later runs cheaper.
  return dict(os.environ, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              XLA_FLAGS="--xla_force_host_platform_device_count=1")


def _main(env, *flags, timeout=600):
  return subprocess.run([sys.executable, "-m", "vt_jax.main", *flags], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _tagged(stdout, tag):
  lines = [l for l in stdout.splitlines() if l.startswith(tag + " ")]
  assert lines, stdout[-2000:]
  return json.loads(lines[-1][len(tag) + 1:])


def _without_time(summary):
  return {k: v for k, v in summary.items() if k != "minutes"}


@pytest.fixture(scope="module")
def finished(env, tmp_path_factory):
  """(workdir, FINAL summary, stderr) of an uninterrupted 12-step run."""
  workdir = tmp_path_factory.mktemp("runs") / "finished"
  result = _main(env, *FLAGS, f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, _tagged(result.stdout, "FINAL"), result.stderr


def _copy(workdir, tmp_path, name="copy"):
  target = tmp_path / name
  shutil.copytree(workdir, target)
  return target


def _truncate(step_dir):
  """Halves every data file of a step, as a crash or a full disk leaves them."""
  n = 0
  for root, _, files in os.walk(step_dir):
    if os.path.basename(root) == "d":
      for name in files:
        path = os.path.join(root, name)
        os.truncate(path, os.path.getsize(path) // 2)
        n += 1
  assert n, f"no data files under {step_dir}"


def test_console_is_quiet_by_default(finished):
  _, _, stderr = finished
  lines = stderr.splitlines()
  # orbax's INFO lines (212 of 322 in a quickstart before) stay off the console...
  assert not [l for l in lines if "orbax" in l or "[process=0]" in l], lines
  # ...while vt_jax's progress, eval and summary lines stay.
  assert any("step 12/12" in l and "ETA" in l for l in lines)
  assert any("eval at step 12:" in l for l in lines)
  assert len(lines) < 30, "\n".join(lines)


def test_unreadable_newest_checkpoint_is_moved_aside_and_resume_equals_uninterrupted(
    finished, env, tmp_path):
  workdir, summary, _ = finished
  copy = _copy(workdir, tmp_path)
  _truncate(copy / "checkpoints" / "12")
  result = _main(env, *FLAGS, f"--workdir={copy}")  # the same command again
  assert result.returncode == 0, result.stderr[-3000:]
  # Falls back to step 8, trains steps 9-12 again and saves step 12 again (orbax refused
  # to before: StepAlreadyExistsError on every retry).
  assert _without_time(_tagged(result.stdout, "FINAL")) == _without_time(summary)
  warnings = [l for l in result.stderr.splitlines() if "unreadable checkpoint" in l]
  assert len(warnings) == 1 and "step 12" in warnings[0] and "moved aside" in warnings[0]
  assert "resumed from the checkpoint at step 8" in result.stderr
  moved = os.listdir(copy / "checkpoints_unreadable")
  assert len(moved) == 1 and moved[0].startswith("12-")  # renamed, not deleted
  assert sorted(int(d) for d in os.listdir(copy / "checkpoints") if d.isdigit())[-1] == 12
  assert "Event loop is closed" not in result.stderr


def test_every_checkpoint_unreadable_is_one_clear_error(finished, env, tmp_path):
  workdir, _, _ = finished
  copy = _copy(workdir, tmp_path)
  steps = sorted(d for d in os.listdir(copy / "checkpoints") if d.isdigit())
  for step in steps:
    _truncate(copy / "checkpoints" / step)
  result = _main(env, *FLAGS, f"--workdir={copy}")
  assert result.returncode == 1
  # No flood (it was 500-1,100 "Event loop is closed" tracebacks). On Python 3.13 with
  # orbax 0.12.8 one traceback from orbax's async deserializer can still escape the filter,
  # depending on timing (seen in 1 of 2 full runs there): tolerated, bounded, to be fixed.
  assert result.stderr.count("Event loop is closed") <= 2, result.stderr[-5000:]
  assert len(result.stderr.splitlines()) < 80, result.stderr[-5000:]
  # Nor asyncio's log of the abandoned reads' own failures (0-70 lines, timing-dependent).
  assert "exception was never retrieved" not in result.stderr, result.stderr[-5000:]
  error = result.stderr[result.stderr.index("ERROR: "):]
  assert f"no readable checkpoint in {copy / 'checkpoints'}" in error
  for step in steps:
    assert f"step {step}: " in error
  assert "new --workdir" in error
  # Nothing moved or deleted when no checkpoint is readable.
  assert sorted(d for d in os.listdir(copy / "checkpoints") if d.isdigit()) == steps
  assert not (copy / "checkpoints_unreadable").exists()


def test_changed_config_over_an_existing_run_is_refused_before_writing(finished, env,
                                                                        tmp_path):
  workdir, _, _ = finished
  copy = _copy(workdir, tmp_path)
  before = {p: (copy / p).read_bytes() for p in ("config.json", "metrics.jsonl")}
  flags = [f.replace(":width=4", ":width=8") for f in FLAGS]
  result = _main(env, *flags, f"--workdir={copy}")
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  error = result.stderr[result.stderr.index("ERROR: "):]
  assert "model.width: saved 4, now 8" in error
  assert "new --workdir" in error and "--config.model.width=4" in error
  assert "unreadable" not in result.stderr
  assert {p: (copy / p).read_bytes() for p in before} == before  # config.json kept
  assert not (copy / "checkpoints_unreadable").exists()


@pytest.mark.parametrize("flags,message", [
    (["--config.eval_batch_size=100"],
     "config.eval_batch_size=100 does not divide over the 8 devices"),
    (["--config.data.augment=bogus"], "config.data.augment='bogus': choose one of"),
    (["--config.data.eval_split=bogus"], "config.data.eval_split='bogus'"),
    (["--config=configs/no_such_config.py"], "no config file 'configs/no_such_config.py'"),
    (["--workdir="], "--workdir is empty"),
    (["--config.model.vt.kernel_init=he"],
     "model.vt.kernel_init='he'; choose one of ['flax', 'torch']"),
])
def test_input_errors_stop_before_any_work_with_one_message(flags, message, env, tmp_path):
  workdir = tmp_path / "w"
  env = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  args = FLAGS + [f"--workdir={workdir}"]
  for flag in flags:
    name = flag.split("=")[0]
    args = [a for a in args if a.split("=")[0] != name] + [flag]
  result = _main(env, *args, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  assert message in result.stderr
  assert "Traceback" not in result.stderr
  assert len(result.stderr.splitlines()) < 10, result.stderr
  assert not workdir.exists()
  assert not os.path.exists(os.path.join(ROOT, "checkpoints"))  # not trained into the CWD


def test_eval_into_a_read_only_workdir_prints_its_result(finished, env, tmp_path):
  workdir, summary, _ = finished
  copy = _copy(workdir, tmp_path)
  if os.geteuid() == 0:  # root writes through permissions: block the file itself too
    (copy / "eval_step_12.json").mkdir()
  for root, dirs, files in os.walk(copy):
    for name in dirs + files:
      path = os.path.join(root, name)
      os.chmod(path, os.stat(path).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
  os.chmod(copy, 0o555)
  try:
    result = _main(env, *FLAGS, f"--workdir={copy}", "--mode=eval", "--verbosity=0")
  finally:
    os.chmod(copy, 0o755)
  assert result.returncode == 0, result.stderr[-3000:]
  evaluated = _tagged(result.stdout, "EVAL")
  assert evaluated["step"] == 12 and evaluated["top1"] == pytest.approx(summary["top1"])
  assert "could not write" in result.stderr and "eval_step_12.json" in result.stderr
  # --verbosity brings the libraries' INFO lines back.
  assert "orbax" in result.stderr


def _start(env, workdir, log, *extra):
  flags = [f for f in FLAGS if "num_train_steps" not in f and "log_every" not in f]
  return subprocess.Popen(
      [sys.executable, "-m", "vt_jax.main", *flags, "--config.num_train_steps=400",
       "--config.log_every_steps=1", f"--workdir={workdir}", *extra],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)


def _wait_for(log, text, proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    with open(log) as f:
      if text in f.read():
        return
    assert proc.poll() is None, open(log).read()[-3000:]
    time.sleep(0.005)
  raise AssertionError(f"{text!r} not in {log} after {timeout}s")


def test_sigterm_then_ctrl_c_save_and_exit_preempted_and_resume(env, tmp_path):
  workdir = tmp_path / "signals"
  log = tmp_path / "run1.log"
  proc = _start(env, workdir, log)
  _wait_for(log, "step 2/400", proc)
  proc.send_signal(signal.SIGTERM)
  stdout, _ = proc.communicate(timeout=300)
  stderr = log.read_text()
  assert proc.returncode == 75, stderr[-3000:]
  step = _tagged(stdout, "PREEMPTED")["step"]
  assert 2 <= step < 400
  assert f"preempted at step {step} of 400" in stderr
  assert "resume with the same command" in stderr
  assert (workdir / "checkpoints" / str(step)).is_dir()

  # The same command resumes; a first Ctrl-C saves and exits the same way.
  log = tmp_path / "run2.log"
  proc = _start(env, workdir, log)
  _wait_for(log, f"step {step + 2}/400", proc)
  proc.send_signal(signal.SIGINT)
  stdout, _ = proc.communicate(timeout=300)
  stderr = log.read_text()
  assert f"resumed from the checkpoint at step {step}" in stderr
  assert proc.returncode == 75, stderr[-3000:]
  second = _tagged(stdout, "PREEMPTED")["step"]
  assert second > step and (workdir / "checkpoints" / str(second)).is_dir()
  assert "Traceback" not in stderr


def test_second_ctrl_c_aborts_without_saving(env, tmp_path):
  workdir = tmp_path / "abort"
  log = tmp_path / "run.log"
  # Saves take long enough (async checkpoint every step) for the second Ctrl-C to land.
  proc = _start(env, workdir, log, "--config.checkpoint.every_steps=1")
  _wait_for(log, "step 3/400", proc)
  proc.send_signal(signal.SIGINT)
  _wait_for(log, "Ctrl-C again aborts", proc)
  proc.send_signal(signal.SIGINT)
  stdout, _ = proc.communicate(timeout=300)
  stderr = log.read_text()
  assert proc.returncode == 130, stderr[-3000:]
  assert "aborted by a second Ctrl-C" in stderr and "PREEMPTED" not in stdout


def _can_mount_in_a_namespace() -> bool:
  try:
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True,
                          timeout=30).returncode == 0
  except (OSError, subprocess.SubprocessError):
    return False


_FULL_DISK = """
set -u
mount -t tmpfs -o size=1400k tmpfs "$MNT" || exit 97
"$PY" -m vt_jax.main "$@" --workdir="$MNT/run" > "$OUT/1.out" 2> "$OUT/1.err"
echo $? > "$OUT/1.rc"
ls "$MNT/run/checkpoints" > "$OUT/1.ls"
mount -o remount,size=64m "$MNT"  # space freed
"$PY" -m vt_jax.main "$@" --workdir="$MNT/run" > "$OUT/2.out" 2> "$OUT/2.err"
echo $? > "$OUT/2.rc"
"""


@pytest.mark.skipif(not _can_mount_in_a_namespace(),
                    reason="needs `unshare -rm` (a user and mount namespace) for a small tmpfs")
def test_full_disk_is_one_message_naming_the_failed_step_and_resume_after_freeing_space(
    finished, env, tmp_path):
  """The workdir on a 1400 KiB tmpfs (its own mount namespace: nothing outside sees it): the
  step-4 checkpoint (~1 MB) fits, step 8's asynchronous save runs out of space."""
  _, summary, _ = finished
  mnt, out = tmp_path / "mnt", tmp_path / "out"
  mnt.mkdir()
  out.mkdir()
  result = subprocess.run(["unshare", "-rm", "bash", "-c", _FULL_DISK, "full_disk", *FLAGS],
                          cwd=ROOT, env=dict(env, MNT=str(mnt), OUT=str(out),
                                             PY=sys.executable),
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  stderr = (out / "1.err").read_text()
  assert (out / "1.rc").read_text().strip() == "1", stderr[-3000:]
  assert "8.orbax-checkpoint-tmp" in (out / "1.ls").read_text()  # step 8's save failed
  errors = [l for l in stderr.splitlines() if "ERROR" in l or l.startswith(("E1", "E0"))]
  assert len(errors) == 1, stderr[-5000:]
  assert errors[0].startswith(
      f"ERROR: could not save the checkpoint for step 8 in {mnt / 'run' / 'checkpoints'}: "
      "No space left on device. Free space there"), errors[0]
  assert "run the same command again" in errors[0]
  assert "Traceback" not in stderr and "never retrieved" not in stderr, stderr[-5000:]
  assert len(stderr.splitlines()) < 15, stderr
  # After freeing space the same command resumes from step 4 and ends where an
  # uninterrupted run ends.
  stderr = (out / "2.err").read_text()
  assert (out / "2.rc").read_text().strip() == "0", stderr[-3000:]
  assert "resumed from the checkpoint at step 4" in stderr
  assert _without_time(_tagged((out / "2.out").read_text(), "FINAL")) == _without_time(summary)


def test_eval_needs_only_the_workdir(finished, env, tmp_path):
  workdir, summary, _ = finished
  copy = _copy(workdir, tmp_path)
  result = _main(env, f"--workdir={copy}", "--mode=eval")  # no --config: DIR/config.json
  assert result.returncode == 0, result.stderr[-3000:]
  evaluated = _tagged(result.stdout, "EVAL")
  assert evaluated["step"] == 12 and evaluated["top1"] == pytest.approx(summary["top1"])
  assert f"saved config {copy / 'config.json'}" in result.stderr


def test_train_without_config_is_one_clear_error(env, tmp_path):
  workdir = tmp_path / "w"
  result = _main(env, f"--workdir={workdir}", timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "--config is required for --mode=train" in result.stderr
  assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) < 5
  assert not workdir.exists()
  (workdir / "checkpoints").mkdir(parents=True)  # eval of a directory without config.json
  (workdir / "checkpoints" / "4").mkdir()
  result = _main(env, f"--workdir={workdir}", "--mode=eval", timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  assert f"{workdir / 'config.json'} does not exist" in result.stderr
  assert "pass --config=FILE" in result.stderr and "Traceback" not in result.stderr
