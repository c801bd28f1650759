"""The loop end to end on synthetic data: exact resume, eval mode, corrupt checkpoints,
non-finite losses, SIGTERM."""

import json
import logging
import os
import shutil

import chex
import orbax.checkpoint as ocp
import pytest

from tests.train import train_fakes
from vt_jax.train import checkpoint as ckpt_lib
from vt_jax.train import control
from vt_jax.train import loop
from vt_jax.train import sharding as sharding_lib


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _drop_timing(records):
  return [{k: v for k, v in r.items() if k != "images_per_sec"} for r in records]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full"))
  result = loop.train_and_evaluate(train_fakes.tiny_config(), workdir,
                                   datasets=train_fakes.FakeData)
  return workdir, result


def test_uninterrupted_run_writes_metrics_config_and_checkpoints(full_run):
  workdir, result = full_run
  records = _records(workdir)
  assert [(r["step"], r["split"]) for r in records] == [
      (2, "train"), (4, "train"), (6, "train"), (6, "eval")]
  for key in ("loss", "lr", "top1", "images_per_sec", "grad_norm"):
    assert key in records[0]
  assert records[-1]["top1"] == pytest.approx(result["top1"])
  assert os.path.exists(os.path.join(workdir, "config.json"))
  steps = sorted(int(d) for d in os.listdir(ckpt_lib.checkpoint_dir(workdir)) if d.isdigit())
  assert steps == [2, 4, 6]
  # TensorBoard (clu's writers): DIR/tensorboard/<split>/events.*, with the same scalars.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for split in ("train", "eval"):
    files = tf.io.gfile.glob(os.path.join(workdir, "tensorboard", split, "events.out.tfevents.*"))
    assert len(files) == 1, files
    tags = set()
    for raw in tf.data.TFRecordDataset(files[0]):
      event = tf.compat.v1.Event.FromString(raw.numpy())
      tags |= {(event.step, v.tag) for v in event.summary.value}
    assert (6, "top1") in tags and (6, "loss") in tags


def test_killed_then_resumed_run_equals_uninterrupted(full_run, tmp_path):
  workdir = str(tmp_path / "resumed")
  config = train_fakes.tiny_config()
  config.data.raise_at_step = 5  # "killed" while fetching batch 5, after the step-4 save
  with pytest.raises(KeyboardInterrupt):
    loop.train_and_evaluate(config, workdir, datasets=train_fakes.FakeData)
  assert ckpt_lib.make_manager(workdir, config).latest_step() == 4
  config.data.raise_at_step = -1
  # The fault injection is a config field, which a resumed run may not change: forget it.
  os.remove(os.path.join(workdir, "config.json"))
  result = loop.train_and_evaluate(config, workdir, datasets=train_fakes.FakeData)
  assert result == full_run[1]
  resumed = [r for r in _records(workdir) if r["step"] > 4]
  uninterrupted = [r for r in _records(full_run[0]) if r["step"] > 4]
  assert _drop_timing(resumed) == _drop_timing(uninterrupted)


def test_eval_mode_reproduces_last_training_eval(full_run):
  workdir, result = full_run
  evaluated = loop.evaluate_checkpoint(train_fakes.tiny_config(), workdir,
                                       datasets=train_fakes.FakeData)
  assert evaluated["step"] == 6
  for key in ("loss", "top1", "top5"):
    assert evaluated[key] == pytest.approx(result[key], rel=1e-6)
  with open(os.path.join(workdir, "eval_step_6.json")) as f:
    assert json.load(f)["top1"] == pytest.approx(result["top1"])
  earlier = loop.evaluate_checkpoint(train_fakes.tiny_config(), workdir, step=4,
                                     datasets=train_fakes.FakeData)
  assert earlier["step"] == 4
  with pytest.raises(ckpt_lib.CheckpointError, match=r"no checkpoint for step 5 .* \[2, 4, 6\]"):
    loop.evaluate_checkpoint(train_fakes.tiny_config(), workdir, step=5,
                             datasets=train_fakes.FakeData)


def test_corrupt_latest_checkpoint_falls_back_and_says_so(full_run, tmp_path, caplog):
  workdir = str(tmp_path / "copy")
  shutil.copytree(full_run[0], workdir)
  latest = os.path.join(ckpt_lib.checkpoint_dir(workdir), "6")
  for root, _, files in os.walk(latest):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  with caplog.at_level(logging.WARNING):
    result = loop.evaluate_checkpoint(train_fakes.tiny_config(), workdir,
                                      datasets=train_fakes.FakeData)
  assert result["step"] == 4
  assert "step 6" in caplog.text and "using step 4 instead" in caplog.text
  for step in ("2", "4"):
    shutil.rmtree(os.path.join(ckpt_lib.checkpoint_dir(workdir), step), ignore_errors=True)
  with pytest.raises(ckpt_lib.CheckpointError, match="no readable checkpoint"):
    loop.evaluate_checkpoint(train_fakes.tiny_config(), workdir, datasets=train_fakes.FakeData)


def test_nonfinite_loss_error_names_the_step_or_skips(tmp_path):
  config = train_fakes.tiny_config(num_train_steps=4)
  config.data.nan_at_step = 2  # the batch of the 3rd update
  with pytest.raises(loop.NonFiniteLossError, match="step 3: non-finite loss"):
    loop.train_and_evaluate(config, str(tmp_path / "err"), datasets=train_fakes.FakeData)
  config.on_nonfinite_loss = "skip"
  loop.train_and_evaluate(config, str(tmp_path / "skip"), datasets=train_fakes.FakeData)
  train = [r for r in _records(str(tmp_path / "skip")) if r["split"] == "train"]
  assert [r["skipped_updates"] for r in train] == [0.0, 1.0]
  assert all(r["loss"] == r["loss"] for r in train)  # finite means, no NaN


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  config = train_fakes.tiny_config()
  config.data.sigterm_at_step = 3  # the signal arrives while step 4's batch is fetched
  workdir = str(tmp_path / "term")
  with pytest.raises(control.Preempted, match="preempted at step 4 of 6"):
    loop.train_and_evaluate(config, workdir, datasets=train_fakes.FakeData)
  assert ckpt_lib.make_manager(workdir, config).latest_step() == 4
  assert max(r["step"] for r in _records(workdir)) == 4


def test_distillation_from_config_file_and_checkpoint_with_ema(full_run, tmp_path):
  from vt_jax.train import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
  teacher_file = tmp_path / "teacher_config.py"
  teacher_file.write_text(
      "from tests.train import train_fakes\n\n"
      "def get_config(arg=None):\n"
      "  return train_fakes.tiny_config()\n")
  config = train_fakes.tiny_config(num_train_steps=2, ema_decay=0.5)
  config.distill.update(teacher_config=str(teacher_file), teacher_checkpoint=full_run[0],
                        temperature=2.0)
  # The teacher is the checkpoint's last step (EMA weights = weights when EMA was off).
  mesh = sharding_lib.make_mesh(config.mesh)
  _, variables = teacher_lib.load_teacher(config.distill, mesh)
  manager = ckpt_lib.make_manager(full_run[0], read_only=True)
  saved = manager.restore(6, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  chex.assert_trees_all_close(variables["params"], saved["params"])
  workdir = str(tmp_path / "student")
  result = loop.train_and_evaluate(config, workdir, datasets=train_fakes.FakeData)
  assert "ema_top1" in result and 0.0 <= result["ema_top1"] <= 1.0
  student = _records(workdir)[0]
  plain = _records(full_run[0])[0]
  assert student["step"] == plain["step"] == 2
  assert student["loss"] != pytest.approx(plain["loss"])  # KD term changes the loss
  config.distill.teacher_checkpoint = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="teacher_checkpoint="):
    teacher_lib.load_teacher(config.distill, mesh)


def test_rerunning_a_finished_run_trains_nothing_and_reports_its_eval(full_run):
  workdir, result = full_run
  before = _records(workdir)
  again = loop.train_and_evaluate(train_fakes.tiny_config(), workdir,
                                  datasets=train_fakes.FakeData)
  assert again == pytest.approx(result)
  assert _records(workdir) == before
