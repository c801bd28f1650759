"""Recipes: schedule values equal the recipe formula; TF RMSProp; weight-decay mask; losses."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vt_jax.config_lib import recipes
from vt_jax.tasks import losses
from vt_jax.train import optim


def _default_formula(epoch, batch):
  return 0.1 * batch / 256 * 0.1 ** math.floor(epoch / 30)


def _advanced_formula(epoch, batch):
  scale = batch / 2048
  if epoch < 5:
    return scale * (0.01 + (0.16 - 0.01) * epoch / 5)
  return scale * 0.16 * 0.9875 ** math.floor(epoch - 5)


@pytest.mark.parametrize("batch", [256, 1024])
@pytest.mark.parametrize("epoch", [0, 0.5, 29.99, 30, 59.5, 60, 89.9])
def test_default_schedule_matches_recipe(epoch, batch):
  config = recipes.default(batch_size=batch)
  spe = 1000
  lr = optim.lr_schedule(config, spe)(int(round(epoch * spe)))
  assert float(lr) == pytest.approx(_default_formula(epoch, batch), rel=1e-5)


@pytest.mark.parametrize("batch", [2048, 4096, 512])
@pytest.mark.parametrize("epoch", [0, 1, 2.5, 4.999, 5, 5.5, 6, 100, 399.9])
def test_advanced_schedule_matches_recipe(epoch, batch):
  config = recipes.advanced(batch_size=batch)
  spe = 1000
  lr = optim.lr_schedule(config, spe)(int(round(epoch * spe)))
  assert float(lr) == pytest.approx(_advanced_formula(epoch, batch), rel=1e-5)


def test_epochs_convert_to_steps():
  config = recipes.default(batch_size=256)
  assert optim.steps_per_epoch(config, 1_281_167) == 5004
  assert optim.total_steps(config, 1_281_167) == 90 * 5004
  config.num_train_steps = 7
  assert optim.total_steps(config, 1_281_167) == 7
  with pytest.raises(ValueError, match="batch_size=256 is larger than the train split"):
    optim.steps_per_epoch(config, 100)


def test_advanced_rmsprop_has_tensorflow_semantics():
  """ms starts at 1, eps inside the sqrt, lr inside the momentum (TF RMSPropOptimizer)."""
  config = recipes.advanced(batch_size=2048)
  config.optimizer.weight_decay = 0.0
  spe = 2  # lr changes every step during warm-up: checks where lr enters the momentum
  tx = optim.make_optimizer(config, spe)
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  state = tx.init(params)
  ms, mom, w = np.ones(3), np.zeros(3), np.array([1.0, -2.0, 3.0])
  lr_fn = optim.lr_schedule(config, spe)
  for step in range(4):
    g = np.array([0.5, -1.0, 2.0]) * (step + 1)
    updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    ms = 0.9 * ms + 0.1 * g * g
    mom = 0.9 * mom + float(lr_fn(step)) * g / np.sqrt(ms + 1e-3)
    w = w - mom
    np.testing.assert_allclose(params["w"], w, rtol=1e-5)


def test_no_weight_decay_on_biases_and_batchnorm():
  config = recipes.default()
  config.optimizer.momentum = 0.0
  tx = optim.make_optimizer(config, 10)
  params = {"conv": {"kernel": jnp.ones((3, 3, 2, 2))}, "bn": {"scale": jnp.ones(2),
                                                                "bias": jnp.ones(2)}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  assert float(jnp.abs(updates["bn"]["scale"]).max()) == 0.0
  assert float(jnp.abs(updates["bn"]["bias"]).max()) == 0.0
  np.testing.assert_allclose(updates["conv"]["kernel"], -0.1 * 4e-5, rtol=1e-5)


def test_gradient_clipping():
  config = recipes.default()
  config.optimizer.update(momentum=0.0, weight_decay=0.0, grad_clip_norm=1.0)
  tx = optim.make_optimizer(config, 10)
  params = {"w": jnp.zeros(2)}
  updates, _ = tx.update({"w": jnp.array([30.0, 40.0])}, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], [-0.1 * 0.6, -0.1 * 0.8], rtol=1e-5)


def test_label_smoothing_and_distillation_formulas():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
  teacher = jnp.array([[1.0, 1.0, 0.0], [0.0, 0.0, 4.0]])
  labels = jnp.array([0, 2])
  logp = jax.nn.log_softmax(logits)
  smooth = jax.nn.one_hot(labels, 3) * 0.9 + 0.1 / 3
  assert float(losses.cross_entropy(logits, labels, 0.1)) == pytest.approx(
      float(-(smooth * logp).sum(-1).mean()), rel=1e-6)
  t = 2.0
  pt = jax.nn.softmax(teacher / t)
  kl = (pt * (jnp.log(pt) - jax.nn.log_softmax(logits / t))).sum(-1).mean() * t * t
  ce = -(jax.nn.one_hot(labels, 3) * logp).sum(-1).mean()
  got = losses.distill_loss(logits, teacher, labels, weight=0.8, temperature=t)
  assert float(got) == pytest.approx(float(0.8 * kl + 0.2 * ce), rel=1e-5)
  # A student equal to its teacher has zero KD loss.
  assert float(losses.distillation(teacher, teacher, t)) == pytest.approx(0.0, abs=1e-6)
  # Padding rows (weight 0) count nowhere.
  w = jnp.array([1.0, 0.0])
  assert float(losses.cross_entropy(logits, labels, 0.0, w)) == pytest.approx(
      float(-logp[0, 0]), rel=1e-6)
