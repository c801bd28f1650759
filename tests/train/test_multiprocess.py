"""Two JAX processes on 127.0.0.1 (gloo CPU collectives) through launch/local_multiprocess.sh."""

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env():
  env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)  # the launcher gives each process its own device count
  env.pop("LOGDIR", None)
  return env


# The quickstart's flags for the 2x1 run below and the data-order test's other runs.
QUICKSTART = ["--config=configs/quickstart.py", "--config.log_every_steps=2",
              "--config.checkpoint.async_save=False"]


def _two_process_run(workdir):
  flags = [f"--workdir={workdir}", *QUICKSTART, "--config.num_train_steps=24",
           "--config.checkpoint.every_steps=12"]
  proc = subprocess.run(["bash", "launch/local_multiprocess.sh", "2", *flags], cwd=ROOT,
                        env=_env(), capture_output=True, text=True, timeout=900)
  return flags, proc


@pytest.fixture(scope="module")
def two_process_quickstart(tmp_path_factory):
  """The quickstart for 24 steps as 2 processes x 1 device (a checkpoint at steps 12 and 24):
  -> (workdir, flags, launcher's CompletedProcess). Two tests read this one run; tests copy the
  workdir before they write to it.

  Made once per test session: under pytest-xdist the two tests may land on different workers,
  and the second to ask waits for the first one's run (a lock file in the session's directory
  above the workers' own) instead of making its own (~90 s of both cores)."""
  worker = os.environ.get("PYTEST_XDIST_WORKER")
  if worker is None:  # one test process: its module fixture is made once anyway
    workdir = tmp_path_factory.mktemp("two_process") / "run"
    flags, proc = _two_process_run(workdir)
    return workdir, flags, proc
  shared = tmp_path_factory.getbasetemp().parent / "two_process_quickstart"  # this session's
  shared.mkdir(exist_ok=True)
  workdir, result = shared / "run", shared / "result.json"
  with open(shared / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not result.exists():
      flags, proc = _two_process_run(workdir)
      result.write_text(json.dumps(dict(flags=flags, args=proc.args, returncode=proc.returncode,
                                        stdout=proc.stdout, stderr=proc.stderr)))
  r = json.loads(result.read_text())
  return workdir, r["flags"], subprocess.CompletedProcess(r["args"], r["returncode"],
                                                          r["stdout"], r["stderr"])


def _copy_run(workdir, flags, to, ignore=None):
  """A copy of a run's workdir at `to`, and its flags pointing there."""
  shutil.copytree(workdir, to, ignore=ignore)
  return [f"--workdir={to}" if f.startswith("--workdir=") else f for f in flags]


@pytest.mark.slow
def test_two_process_run_matches_single_process_eval_of_its_checkpoint(tmp_path,
                                                                       two_process_quickstart):
  workdir, flags, proc = two_process_quickstart
  logdir = workdir / "launch_logs"  # under the workdir, not the repository
  logs = {p: (logdir / p).read_text()[-2000:] for p in os.listdir(logdir) if p.endswith(".log")}
  assert proc.returncode == 0, logs
  # The launcher ends with each process's summary line (not orbax's last messages).
  summary = proc.stdout[proc.stdout.index("--- summary"):].splitlines()[1:]
  assert [l.split(":")[0] for l in summary] == ["process 0", "process 1"]
  assert all("exit 0 (finished): FINAL {" in l for l in summary), proc.stdout
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  # Only process 0 writes: each event appears once.
  assert [(r["step"], r["split"]) for r in records] == [
      *((step, "train") for step in range(2, 25, 2)), (24, "eval")]
  distributed_eval = records[-1]
  # Process 1 really took part: it trained to the end and computed the same eval.
  p1_final = [l for l in logs["process_1.log"].splitlines() if l.startswith("FINAL ")]
  assert p1_final, logs["process_1.log"]
  assert json.loads(p1_final[-1][len("FINAL "):])["top1"] == distributed_eval["top1"]

  # Evaluated as one process in a copy (the other test reads the fixture's workdir).
  flags = _copy_run(workdir, flags, tmp_path / "run")
  single = subprocess.run([sys.executable, "-m", "vt_jax.main", "--mode=eval", *flags],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  lines = [l for l in single.stdout.splitlines() if l.startswith("EVAL ")]
  final = json.loads(lines[-1][len("EVAL "):])
  assert final["step"] == 24
  assert final["top1"] == pytest.approx(distributed_eval["top1"], abs=1e-9)
  assert final["loss"] == pytest.approx(distributed_eval["loss"], rel=1e-5)


def _train_loss_at(workdir, step):
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  return [r for r in records if r["split"] == "train" and r["step"] == step][-1]["loss"]


def _one_process(flags, devices):
  env = dict(os.environ, PYTHONPATH=ROOT,
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  proc = subprocess.run([sys.executable, "-m", "vt_jax.main", *flags], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_one_data_order_on_every_topology_and_across_a_resize(tmp_path, two_process_quickstart):
  """The quickstart for 24 steps as 1 process x 2 devices and as 2 processes x 1 device (the
  fixture's run), and that 2x1 run's step-12 checkpoint resumed as 1x2 to step 24: the same
  examples in the same rows, so the same step-12 and step-24 train losses (up to float32
  reduction order). 24 steps cross the first epoch's end (1437 examples, 64 a step)."""
  two_x_one, flags, proc = two_process_quickstart
  assert proc.returncode == 0, proc.stdout[-3000:]
  _one_process([f"--workdir={tmp_path / 'a'}", *QUICKSTART, "--config.num_train_steps=24"], 2)
  # The 2x1 run as if stopped at step 12: its workdir without the step-24 checkpoint, its
  # metrics up to step 12. Resumed with the 2x1 run's own flags, only the topology changes.
  resized = tmp_path / "c"
  resized_flags = _copy_run(two_x_one, flags, resized, ignore=lambda d, names: [
      n for n in names if n in ("24", "launch_logs") or n.startswith("eval_step_")])
  assert sorted(os.listdir(resized / "checkpoints")) == ["12"]
  records = [json.loads(line) for line in open(two_x_one / "metrics.jsonl")]
  with open(resized / "metrics.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records if r["step"] <= 12)
  _one_process(resized_flags, 2)
  reference = _train_loss_at(tmp_path / "a", 24)
  assert _train_loss_at(two_x_one, 24) == pytest.approx(reference, rel=2e-4)
  assert _train_loss_at(resized, 24) == pytest.approx(reference, rel=2e-4)
  assert _train_loss_at(resized, 12) == pytest.approx(_train_loss_at(tmp_path / "a", 12),
                                                      rel=2e-4)


@pytest.mark.slow
def test_a_killed_process_stops_the_other_within_30s_naming_it(tmp_path):
  workdir = tmp_path / "lost"
  # The fixture's model, batch and recipe (so the same compiled init and train step: from
  # the persistent compilation cache when the fixture ran first); steps and logging differ.
  flags = [f"--workdir={workdir}", "--config=configs/quickstart.py",
           "--config.num_train_steps=1000", "--config.log_every_steps=1"]
  launcher = subprocess.Popen(["bash", "launch/local_multiprocess.sh", "2", *flags], cwd=ROOT,
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
  log0 = workdir / "launch_logs" / "process_0.log"
  deadline = time.time() + 400
  while not (log0.exists() and re.search(r"step \d+/1000", log0.read_text())):
    assert launcher.poll() is None and time.time() < deadline, launcher.communicate()
    time.sleep(0.2)
  killed_at = time.time()
  os.kill(int((workdir / "launch_logs" / "process_1.pid").read_text()), 9)
  stdout, stderr = launcher.communicate(timeout=120)
  # The launcher returns once both are gone: the survivor stopped by itself (heartbeat
  # timeout, --heartbeat_timeout_s=15), long before the launcher's 60 s grace would kill it.
  assert time.time() - killed_at < 30, (stdout, stderr)
  assert launcher.returncode == 137
  assert "process 1 (pid" in stderr and "exited with status 137" in stderr
  assert "still running" not in stderr
  summary = stdout[stdout.index("--- summary"):]
  assert "process 1: exit 137 (killed by signal 9)" in summary
  assert re.search(r"process 0: exit \d+ \(.*\): .*(another task died|unhealthy)", summary), summary
  assert "stopped sending heartbeats" in log0.read_text()


@pytest.mark.slow
def test_segmentation_miou_over_two_processes_equals_one_process(tmp_path):
  """The confusion matrix is summed over both hosts: the same mIoU and per-class IoU as one
  process evaluating the same checkpoint (integer counts: exactly equal)."""
  workdir = tmp_path / "seg"
  env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
             LOGDIR=str(tmp_path / "logs"), PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  flags = [f"--workdir={workdir}", "--config=configs/quickstart_seg.py",
           "--config.num_train_steps=2", "--config.log_every_steps=2"]
  proc = subprocess.run(["bash", "launch/local_multiprocess.sh", "2", *flags], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  logs = {p: (tmp_path / "logs" / p).read_text()[-2000:] for p in os.listdir(tmp_path / "logs")}
  assert proc.returncode == 0, logs
  distributed = [json.loads(line) for line in open(workdir / "metrics.jsonl")][-1]
  assert distributed["split"] == "eval" and "miou" in distributed
  assert (workdir / "pictures" / "eval_2.png").exists()  # process 0 drew it
  single = subprocess.run([sys.executable, "-m", "vt_jax.main", "--mode=eval", *flags],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=900)
  assert single.returncode == 0, single.stderr[-3000:]
  lines = [l for l in single.stdout.splitlines() if l.startswith("EVAL ")]
  final = json.loads(lines[-1][len("EVAL "):])
  for key, value in distributed.items():
    if key == "miou" or key == "pixel_acc" or key.startswith("iou/"):
      assert final[key] == pytest.approx(value, abs=1e-12), key
  assert {k for k in final if k.startswith("iou/")} == {
      k for k in distributed if k.startswith("iou/")}
