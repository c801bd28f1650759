"""Segmentation through the task-agnostic steps and loop: loss goes down, mIoU, pictures."""

import json
import os

import jax
import numpy as np
import pytest

from tests.train import test_init_from
from vt_jax import models
from vt_jax.config_lib import files as config_files
from vt_jax.config_lib import models as model_configs
from vt_jax.train import loop
from vt_jax.train import optim
from vt_jax.train import sharding as sharding_lib
from vt_jax.train import state as state_lib
from vt_jax.train import steps as steps_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart_seg.py")


def _blocks_batch(n=8, size=16, classes=4, seed=0):
  """Images whose left/right halves are coloured by their class; a few ignore pixels."""
  rng = np.random.default_rng(seed)
  cls = rng.integers(0, classes, size=(n, 2))
  mask = np.repeat(np.repeat(cls[:, None, :], size, 1), size // 2, 2)
  colors = rng.normal(size=(classes, 3)).astype(np.float32)
  images = colors[mask] + 0.1 * rng.normal(size=(n, size, size, 3)).astype(np.float32)
  mask[:, 0, 0] = 255
  return {"image": images, "mask": mask.astype(np.int32), "valid": np.ones(n, np.float32),
          "label": np.zeros(n, np.int32)}


@pytest.mark.parametrize("name", ["fpn", "vt_fpn"])
def test_a_few_segmentation_steps_lower_the_loss(name):
  config = config_files.load(f"{QUICKSTART}:model={name}")
  config.model.num_classes = 4
  config.schedule.update(warmup_epochs=0.0, peak_lr=0.1)
  mesh = sharding_lib.make_mesh(config.mesh, jax.devices()[:2])
  model = models.create_model(config.model)
  tx = optim.make_optimizer(config, 10)
  init = lambda rng: state_lib.create(model, tx, rng, (16, 16, 3))
  shardings = sharding_lib.state_shardings(jax.eval_shape(init, jax.random.key(0)), mesh,
                                           config.mesh.rules)
  # The init is set-up, not under test: compiled without XLA's backend optimisations (the
  # same initialisers, an unoptimised build; a tiny VT-FPN's init: 10 s instead of 41 s to
  # compile on 2 CPU cores). The train step below is compiled as always.
  state = jax.jit(init, out_shardings=shardings).lower(jax.random.key(0)).compile(
      test_init_from.INIT_COMPILER_OPTIONS)(jax.random.key(0))
  step = steps_lib.make_train_step(model, tx, config, 10, mesh, shardings)
  batch = jax.device_put(_blocks_batch(), sharding_lib.batch_sharding(mesh))
  losses, accs = [], []
  for _ in range(12):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
    accs.append(float(metrics["pixel_acc"]))
  assert losses[-1] < 0.5 * losses[0], losses
  assert accs[-1] > accs[0], accs


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_quickstart_seg_trains_evaluates_draws_and_loads_a_backbone(tmp_path, caplog):
  source = tmp_path / "classifier"
  flat = test_init_from._save_workdir(source, model_configs.resnet(  # pylint: disable=protected-access
      18, num_classes=10, width=8, small_image_stem=True))
  n_backbone = sum(1 for k in flat if k[1] == "backbone")  # the classifier's head is dropped
  config = config_files.load(QUICKSTART)
  config.update(num_train_steps=2, log_every_steps=2, init_from=str(source))
  config.checkpoint.async_save = False
  workdir = str(tmp_path / "run")
  caplog.set_level("INFO")
  result = loop.train_and_evaluate(config, workdir)
  assert f"loaded {n_backbone} backbone tensors" in caplog.text
  assert "0 backbone tensors stay random" in caplog.text
  records = _records(workdir)
  assert [(r["step"], r["split"]) for r in records] == [(2, "train"), (2, "eval")]
  assert "pixel_acc" in records[0] and "top1" not in records[0]
  ev = records[-1]
  assert 0.0 <= ev["miou"] <= 1.0 and 0.0 <= ev["pixel_acc"] <= 1.0
  ious = [v for k, v in ev.items() if k.startswith("iou/")]
  assert "iou/0" in ev and ev["miou"] == pytest.approx(np.mean(ious))
  assert result["miou"] == ev["miou"]
  picture = os.path.join(workdir, "pictures", "eval_2.png")
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  img = matplotlib.image.imread(picture)
  assert img.shape[0] > img.shape[1] > 300  # 4 rows of image | truth | prediction

  # Resuming never re-applies init_from (a bad path would fail if it did).
  config.update(num_train_steps=3, init_from=str(tmp_path / "no_such.npz"))
  loop.train_and_evaluate(config, workdir)
  evaluated = loop.evaluate_checkpoint(config, workdir)
  assert evaluated["step"] == 3
  assert evaluated["miou"] == pytest.approx(_records(workdir)[-1]["miou"], abs=1e-12)
  with open(os.path.join(workdir, "eval_step_3.json")) as f:
    assert "iou/0" in json.load(f)
  assert os.path.exists(os.path.join(workdir, "pictures", "eval_3.png"))
