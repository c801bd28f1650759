"""The lr schedule (optax pieces) equals each recipe's closed form at every step of a run.

The closed forms are written here from the recipes' text (config_lib.recipes), in float64,
independently of vt_jax.train.optim; a small steps-per-epoch keeps every step cheap.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from vt_jax.config_lib import recipes
from vt_jax.train import optim


def _default(step, spe, batch):
  """Table 2: lr 0.1 per 256 images, x0.1 every 30 epochs, no warm-up."""
  return 0.1 * batch / 256 * 0.1 ** math.floor(step / spe / 30)


def _advanced(step, spe, batch):
  """Table 8: 0.01 -> 0.16 (per 2048) linearly over 5 epochs, then x0.9875 per epoch."""
  epoch, scale = step / spe, batch / 2048
  if epoch < 5:
    return scale * (0.01 + (0.16 - 0.01) * epoch / 5)
  return scale * 0.16 * 0.9875 ** math.floor(epoch - 5)


def _segmentation_form(step, spe, total, batch, ref, peak, init, warmup_epochs):
  """Linear warm-up from `init`, then x0.1 at 2/3 and at 8/9 of the run's steps."""
  epoch, scale = step / spe, batch / ref
  if epoch < warmup_epochs:
    return scale * (init + (peak - init) * epoch / warmup_epochs)
  return scale * peak * 0.1 ** sum(step >= f * total for f in (2 / 3, 8 / 9))


def _staircase_form(step, spe, batch, peak, init, warmup_epochs, every, factor=0.1):
  """Linear warm-up, then x`factor` every `every` epochs counted from the warm-up's end."""
  epoch, scale = step / spe, batch / 256
  if epoch < warmup_epochs:
    return scale * (init + (peak - init) * epoch / warmup_epochs)
  return scale * peak * factor ** math.floor((epoch - warmup_epochs) / every)


def _check_every_step(config, spe, total, closed_form):
  steps = np.arange(total + 1)
  got = np.asarray(optim.lr_schedule(config, spe)(jnp.asarray(steps)))
  assert got.dtype == np.float32
  want = np.array([closed_form(int(t)) for t in steps])
  # float32 rounding: a few ulps of the run's largest lr (an lr off by one step is off by
  # 1.25% or more, the smallest step of any recipe).
  tol = 4 * np.finfo(np.float32).eps * want.max()
  bad = np.flatnonzero(np.abs(got - want) > tol)
  assert bad.size == 0, [(int(t), float(got[t]), want[t]) for t in bad[:5]]
  # And the same values at scalar (Python int) steps, as the train step calls it.
  for t in (0, 1, total // 2, total):
    assert abs(float(optim.lr_schedule(config, spe)(int(t))) - want[t]) <= tol


@pytest.mark.parametrize("batch", [256, 1024])
def test_default_recipe_every_step(batch):
  spe = 7
  config = recipes.default(batch_size=batch)
  total = optim.total_steps(config, spe * batch)
  assert total == 90 * spe
  _check_every_step(config, spe, total, lambda t: _default(t, spe, batch))


@pytest.mark.parametrize("batch", [2048, 512])
def test_advanced_recipe_every_step(batch):
  spe = 3
  config = recipes.advanced(batch_size=batch)
  total = optim.total_steps(config, spe * batch)
  assert total == 400 * spe
  _check_every_step(config, spe, total, lambda t: _advanced(t, spe, batch))


@pytest.mark.parametrize("spe", [5, 7])
def test_segmentation_recipe_every_step(spe):
  config = recipes.segmentation()
  total = optim.total_steps(config, spe * config.batch_size)
  _check_every_step(config, spe, total, lambda t: _segmentation_form(
      t, spe, total, 32, 32, 0.04, 0.04 * 0.001, 0.0))


def test_segmentation_configs_with_warmup_every_step():
  # LIP: 1 warm-up epoch of 150, batch 96.
  spe = 4
  lip = recipes.lip_fpn()
  total = optim.total_steps(lip, spe * lip.batch_size)
  _check_every_step(lip, spe, total, lambda t: _segmentation_form(
      t, spe, total, 96, 96, 0.01, 0.01 * 0.001, 1.0))
  # COCO-stuff: 45k steps, a warm-up of 500 iterations of 118,287 images at batch 32 -- with
  # 118,287 // 32 steps per epoch a fractional number of steps (499.97).
  coco = recipes.coco_stuff_fpn()
  spe = 118_287 // 32
  warmup = 500 * 32 / 118_287
  _check_every_step(coco, spe, 45_000, lambda t: _segmentation_form(
      t, spe, 45_000, 32, 32, 0.04, 0.04 * 0.001, warmup))


@pytest.mark.parametrize("warmup_epochs,every", [(0.35, 2.8), (0.55, 0.73)])
def test_fractional_warmup_before_a_staircase_every_step(warmup_epochs, every):
  """Warm-up and decay periods that end between two steps (configs/ablations.py's short
  default runs: 0.05 and 0.4 of a 7-epoch run at 31 steps per epoch, the first case)."""
  spe, epochs = (31, 7) if warmup_epochs == 0.35 else (10, 20)
  config = recipes.default(batch_size=64, num_epochs=float(epochs))
  config.schedule.update(peak_lr=0.2, warmup_epochs=warmup_epochs, init_lr=0.02,
                         decay_every_epochs=every)
  assert warmup_epochs * spe % 1 and every * spe % 1
  _check_every_step(config, spe, epochs * spe, lambda t: _staircase_form(
      t, spe, 64, 0.2, 0.02, warmup_epochs, every))
