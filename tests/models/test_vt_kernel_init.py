"""The VT maps' kernel initialisation (model.vt.kernel_init) and what it is for.

With flax's default (LeCun normal) the shipped VT-R18's tokens reach its head with a squared
norm of ~4x ResNet-18's pooled features (VT-R50: ~360x ResNet-50's), so the first SGD step of
the paper's default recipe overshoots and the loss diverges within a few steps. PyTorch's
default for nn.Linear / nn.Conv (U(+-1/sqrt(fan_in)), a third of the variance) does not.
"""

import math
import os

import jax
import numpy as np
import pytest

from vt_jax import models
from vt_jax.config_lib import files
from vt_jax.models import layers
from vt_jax.models import vt
from vt_jax.models.vt_block import VTBlock
from vt_jax.train import sharding as sharding_lib
from vt_jax.train import state as state_lib
from vt_jax.train import steps as steps_lib
from vt_jax.train import optim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("groups", [1, 16])
def test_torch_init_is_pytorchs_uniform_bound_per_group(groups):
  # PyTorch: kaiming_uniform_(a=sqrt(5)) -> U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in =
  # inputs per group. A grouped map's fan_in is C/groups, not C.
  c = 256
  module = layers.projection(c, groups, jax.numpy.float32, "p",
                             kernel_init=layers.kernel_initializer("torch"))
  params = module.init(jax.random.key(0), jax.numpy.ones((1, 3, c)))["params"]
  kernel = np.asarray(params["kernel"] if groups == 1 else params["conv"]["kernel"])
  bound = 1.0 / math.sqrt(c // groups)
  assert np.abs(kernel).max() <= bound
  assert np.abs(kernel).max() > 0.98 * bound  # uniform over the whole interval
  np.testing.assert_allclose(kernel.var(), bound ** 2 / 3, rtol=0.05)


def test_vt_block_maps_follow_the_field_and_a_bad_name_names_it():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 64))
  stds = {}
  for name in ("torch", "flax"):
    block = VTBlock(tokens=4, token_channels=64, heads=4, projector_heads=4, kernel_init=name)
    params = block.init(jax.random.key(1), x)["params"]
    stds[name] = float(np.asarray(params["projector"]["query"]["kernel"]).std())
  # LeCun normal has 3x the variance of PyTorch's uniform at the same fan_in.
  np.testing.assert_allclose(stds["flax"] / stds["torch"], math.sqrt(3), rtol=0.1)
  with pytest.raises(ValueError, match=r"model\.vt\.kernel_init='he'.*flax.*torch"):
    VTBlock(tokens=4, token_channels=64, heads=4, projector_heads=4,
            kernel_init="he").init(jax.random.key(1), x)
  assert vt.Projector.kernel_init == "torch"


def _losses(kernel_inits, steps: int = 8) -> dict:
  """Losses of the shipped VT-R18's real train step (its default recipe) on one fixed batch,
  one run per model.vt.kernel_init. The kernel init only enters model.init (flax calls an
  initializer when it creates a parameter, never in apply), so every run takes the first
  run's compiled train step from its own initial state: one train-step compile, not one per
  run. A run stops at its first non-finite loss or loss above 100 (diverged: all the test
  asserts of such a run)."""
  losses, step, batch = {}, None, None
  for kernel_init in kernel_inits:
    config = files.load(os.path.join(ROOT, "configs/vt_r18.py"))
    config.model.vt.kernel_init = kernel_init
    config.batch_size = 32  # the recipe's lr scales with it: 0.1 * 32 / 256
    mesh = sharding_lib.make_mesh(config.mesh, jax.devices()[:1])
    model = models.create_model(config.model)
    tx = optim.make_optimizer(config, 1000)
    init, shardings, _ = state_lib.sharded_init(model, tx, (64, 64, 3), mesh, config.mesh.rules)
    state = init(jax.random.PRNGKey(0))
    if step is None:
      step = steps_lib.make_train_step(model, tx, config, 1000, mesh, shardings)
      rng = np.random.default_rng(0)
      batch = jax.device_put({"image": rng.normal(size=(32, 64, 64, 3)).astype(np.float32),
                              "label": rng.integers(0, 1000, 32).astype(np.int32),
                              "valid": np.ones(32, np.float32)},
                             sharding_lib.batch_sharding(mesh))
    run = losses[kernel_init] = []
    for _ in range(steps):
      state, metrics = step(state, batch)
      run.append(float(metrics["loss"]))
      if not math.isfinite(run[-1]) or run[-1] > 100.0:
        break
  return losses


@pytest.mark.slow
def test_shipped_vt_r18_trains_on_its_recipe_with_the_default_init():
  runs = _losses(("torch", "flax"))
  losses = runs["torch"]
  assert len(losses) == 8, losses  # all 8 steps ran (none diverged)
  assert math.isclose(losses[0], math.log(1000), rel_tol=1e-3)  # zero-init head
  assert np.all(np.isfinite(losses)) and max(losses) < 7.5, losses
  assert losses[-1] < losses[0] - 3.0, losses  # it fits the batch, as ResNet-18 does
  # What the default exists for: with flax's init the same run diverges (measured: 10.8
  # after the first step, 8e3 by the fifth, NaN by the seventh; the run stops at the first
  # loss above 100).
  diverged = runs["flax"]
  assert not np.all(np.isfinite(diverged)) or max(diverged) > 100.0, diverged
