"""Device augmentation: op-by-op parity with the host's TF ops, per-example keys and
independence, the policies' distributions, and the train / eval steps' use of it."""

import collections

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from tests.train import train_fakes
from vt_jax import tasks
from vt_jax.data import augment
from vt_jax.data import augment_device
from vt_jax.train import optim
from vt_jax.train import sharding as sharding_lib
from vt_jax.train import state as state_lib
from vt_jax.train import steps as steps_lib

TABLE_OPS = ('Invert', 'Posterize', 'Solarize', 'SolarizeAdd', 'AutoContrast', 'Equalize')
BLENDS = ('Color', 'Contrast', 'Brightness', 'Sharpness')
GEOMETRIC = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')
LEVELS = (0, 2, 5, 9, 10)


def _images(seed, n=3, h=20, w=20):
  """Random uint8 images; half of them in a narrow range (equalize / autocontrast work)."""
  rng = np.random.default_rng(seed)
  out = rng.integers(0, 256, (n, h, w, 3)).astype(np.uint8)
  out[::2] = rng.integers(60, 140, (len(out[::2]), h, w, 3))
  return out


def _host_and_device(name, level, image, seed):
  """The host op `name` at `level` and the device op with the host's random draws."""
  seed = tf.constant(seed, tf.int64)
  host = augment._op(name, tf.constant(image, tf.float32), float(level), seed).numpy()  # pylint: disable=protected-access
  sign = float(augment._signed(tf.constant(1.0), seed).numpy())
  h, w = image.shape[:2]
  cy = int(tf.random.stateless_uniform([], seed, 0, h, tf.int32))
  cx = int(tf.random.stateless_uniform([], seed + 1, 0, w, tf.int32))
  device = np.asarray(augment_device.apply_op(image, name, float(level), sign=sign, cy=cy,
                                              cx=cx))
  return host, device


@pytest.mark.parametrize('name', TABLE_OPS + ('Cutout',))
def test_table_ops_and_cutout_match_the_host_exactly(name):
  for level in LEVELS:
    for k, image in enumerate(_images(level)):
      host, device = _host_and_device(name, level, image, [k, level])
      if name == 'AutoContrast':
        # Its outputs are fractions (x - lo) * 255 / (hi - lo); XLA:CPU divides float32
        # within an ulp or two of IEEE division (3e-5 at 255), TF exactly.
        np.testing.assert_allclose(device, host, rtol=0, atol=1e-4)
      else:
        np.testing.assert_array_equal(device, host, err_msg=f'{name} level {level}')


def test_table_ops_keep_a_flat_channel_as_the_host_does():
  image = _images(1)[0]
  image[..., 1] = 77  # autocontrast / equalize leave a one-value channel alone
  for name in ('AutoContrast', 'Equalize'):
    host, device = _host_and_device(name, 5, image, [0, 0])
    np.testing.assert_allclose(device, host, rtol=0, atol=1e-4)  # AutoContrast: see above
    np.testing.assert_array_equal(device[..., 1], 77)


@pytest.mark.parametrize('name', BLENDS)
def test_blends_match_the_host_within_a_grey_level(name):
  for level in LEVELS:
    for k, image in enumerate(_images(level + 10)):
      host, device = _host_and_device(name, level, image, [k, level])
      assert np.abs(device - host).max() <= 1.0, (name, level)
  # A wrong factor or degenerate image is far more than one level off.
  host, device = _host_and_device(name, 9, _images(3)[1], [0, 0])
  assert np.abs(host - _images(3)[1]).max() > 5


@pytest.mark.parametrize('name', GEOMETRIC)
def test_geometric_ops_match_the_host_nearest_resampling(name):
  """Equal pixels except where TF's and XLA's float32 arithmetic round a source
  coordinate that lies on a half-pixel tie to different neighbours (at most 1%)."""
  for level in LEVELS:
    for k, image in enumerate(_images(level + 20, h=24, w=18)):
      for seed in ([k, level], [k + 5, level]):  # both signs occur
        host, device = _host_and_device(name, level, image, seed)
        assert (device != host).mean() <= 0.01, (name, level, seed)
        if level:
          assert (host == 128).all(-1).mean() > 0 or name == 'Rotate'


def test_geometric_ops_move_pixels():
  image = _images(4)[0]
  for name in GEOMETRIC:
    out = np.asarray(augment_device.apply_op(image, name, 10.0))
    assert (out != image).mean() > 0.3, name


def _config(kind, flip=True):
  return dict(kind=kind, flip=flip, randaugment_layers=2, randaugment_magnitude=9.0)


@pytest.mark.parametrize('kind', ['none', 'autoaugment', 'randaugment'])
def test_each_example_is_augmented_independently_of_its_batch(kind):
  images = _images(5, n=6, h=16, w=16)
  epoch = np.array([0, 0, 1, 1, 2, 2], np.int32)
  index = np.array([3, 4, 3, 4, 9, 0], np.int32)
  fn = jax.jit(lambda x, e, i: augment_device.augment_batch(x, e, i, 7, **_config(kind)))
  batch = np.asarray(fn(images, epoch, index))
  for i in range(len(images)):
    alone = np.asarray(fn(images[i:i + 1], epoch[i:i + 1], index[i:i + 1]))[0]
    np.testing.assert_array_equal(batch[i], alone)
  assert batch.dtype == np.float32 and batch.min() >= 0 and batch.max() <= 255


@pytest.mark.parametrize('kind', ['autoaugment', 'randaugment'])
def test_randomness_is_keyed_by_seed_epoch_and_index(kind):
  image = np.repeat(_images(6, n=1, h=16, w=16), 12, axis=0)
  fn = jax.jit(lambda s, e, i: augment_device.augment_batch(image, e, i, s, **_config(kind)))
  same_index = np.zeros(12, np.int32)
  np.testing.assert_array_equal(fn(3, same_index, same_index)[0],
                                fn(3, same_index, same_index)[5])
  by_index = np.asarray(fn(3, same_index, np.arange(12, dtype=np.int32)))
  by_epoch = np.asarray(fn(3, np.arange(12, dtype=np.int32), same_index))
  by_seed = np.asarray(fn(4, same_index, np.arange(12, dtype=np.int32)))
  for outs in (by_index, by_epoch):
    assert len({o.tobytes() for o in outs}) >= 8  # draws differ (a few may coincide)
  assert sum(np.array_equal(a, b) for a, b in zip(by_index, by_seed)) <= 3


def _keys(n):
  return jax.jit(jax.vmap(lambda i: augment_device.example_key(0, 1, i)))(jnp.arange(n))


def test_autoaugment_draws_every_sub_policy_uniformly_and_fires_at_its_probability():
  n = 10_000
  keys = _keys(n)
  choice = np.asarray(jax.jit(jax.vmap(
      lambda k: augment_device.sub_policy_choice('autoaugment', k)))(keys))
  counts = np.bincount(choice, minlength=25)
  expected = n / 25
  # Binomial sd ~ 20 at 400: 5 sd.
  assert np.abs(counts - expected).max() < 100, counts
  plan = augment_device.make_plan('autoaugment', 8, 8)
  rows = np.asarray(jax.jit(jax.vmap(lambda k: augment_device.policy_draws(
      'autoaugment', plan, jax.random.split(k)[1], 2)[0]))(keys))
  for p, sub_policy in enumerate(augment.IMAGENET_POLICY):
    mine = rows[choice == p]
    for slot, (_, prob, _) in enumerate(sub_policy):
      fired = (mine[:, slot] == 1 + 2 * p + slot).mean()
      assert (mine[:, slot] != 0).mean() == fired  # a slot runs its own op or none
      assert abs(fired - prob) < 0.1, (p, slot, fired, prob)


def test_randaugment_draws_every_op_uniformly_and_flips_half():
  n = 8_000
  keys = _keys(n)
  plan = augment_device.make_plan('randaugment', 8, 8)
  rows = np.asarray(jax.jit(jax.vmap(lambda k: augment_device.policy_draws(
      'randaugment', plan, jax.random.split(k)[1], 2)[0]))(keys))
  for layer in range(2):
    counts = np.bincount(rows[:, layer] - 1, minlength=16)
    assert np.abs(counts - n / 16).max() < 5 * np.sqrt(n / 16), counts
  assert np.mean(rows[:, 0] == rows[:, 1]) < 0.1  # layers draw independently (1/16)
  image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(1, 8, 8, 3)
  flipped = jax.jit(jax.vmap(lambda k: jnp.array_equal(
      augment_device.augment_one(image[0], k, kind='none', flip=True), image[0, :, ::-1])))(
          keys[:2000])
  assert abs(float(jnp.mean(flipped)) - 0.5) < 0.05


def test_no_flip_for_resize_data_and_unknown_kind_names_the_field():
  image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(1, 8, 8, 3)
  index = np.arange(1, dtype=np.int32)
  for i in range(8):
    out = augment_device.augment_batch(image, index, index + i, 0, **_config('none', False))
    np.testing.assert_array_equal(out, image)
  digits = ml_collections.ConfigDict(dict(preprocess='resize'))
  assert not augment_device.flips(digits)
  assert augment_device.flips(ml_collections.ConfigDict(dict(preprocess='imagenet')))
  with pytest.raises(ValueError, match='config.data.augment'):
    augment_device.augment_batch(image, index, index, 0, **_config('autoaug'))


# --- the train and eval steps ------------------------------------------------------------


class _Linear(nn.Module):
  """A linear classifier of the pixels: its loss and gradient see every input value, and
  it compiles in a moment (the step's code around the model is what is tested)."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    return nn.Dense(train_fakes.NUM_CLASSES)(x.reshape(x.shape[0], -1))


def _step_setup(augment_device_on, kind='autoaugment'):
  config = train_fakes.tiny_config()
  config.data = ml_collections.ConfigDict(dict(
      name='fake', augment=kind, augment_device=augment_device_on, preprocess='imagenet',
      randaugment_layers=2, randaugment_magnitude=9.0,
      mean=(120.0, 110.0, 100.0), std=(60.0, 50.0, 40.0)))
  mesh = sharding_lib.make_mesh(config.mesh, jax.devices()[:2])
  model = _Linear()
  tx = optim.make_optimizer(config, 4)
  init, shardings, _ = state_lib.sharded_init(model, tx, (16, 16, 3), mesh,
                                              config.mesh.rules)
  return config, mesh, model, tx, init, shardings


def _uint8_batch():
  return {'image': _images(8, n=16, h=16, w=16),
          'label': (np.arange(16) % train_fakes.NUM_CLASSES).astype(np.int32),
          'valid': (np.arange(16) != 5).astype(np.float32),  # row 5: a bad example
          'epoch': np.full(16, 2, np.int32), 'index': np.arange(16, dtype=np.int32) * 3}


def test_train_step_augments_then_normalises_uint8_batches():
  """The step with augment_device=True equals the host-style step fed the device path's
  normalised output: the step runs exactly augment_batch + normalise."""
  config, mesh, model, tx, init, shardings = _step_setup(True)
  batch = _uint8_batch()
  step = steps_lib.make_train_step(model, tx, config, 4, mesh, shardings)
  _, on_device = step(init(jax.random.PRNGKey(0)),
                      jax.device_put(batch, sharding_lib.batch_sharding(mesh)))

  images = np.array(jax.jit(lambda x, e, i: augment_device.normalise(
      augment_device.augment_batch(x, e, i, config.seed, **_config('autoaugment')),
      config.data))(batch['image'], batch['epoch'], batch['index']))
  images[batch['valid'] == 0] = 0.0  # a bad example's row, as the host sends it
  expected = dict(batch, image=images)
  config_host, *_ = _step_setup(False)
  step_host = steps_lib.make_train_step(model, tx, config_host, 4, mesh, shardings)
  _, on_host = step_host(init(jax.random.PRNGKey(0)),
                         jax.device_put(expected, sharding_lib.batch_sharding(mesh)))
  for k in ('loss', 'grad_norm'):
    np.testing.assert_allclose(on_device[k], on_host[k], rtol=1e-5, err_msg=k)
  # Without the augmentation (plain normalised crops) the gradient differs.
  plain = dict(batch, image=np.where(
      batch['valid'][:, None, None, None] > 0,
      np.asarray(augment_device.normalise(batch['image'], config.data)), 0.0))
  _, unaugmented = step_host(init(jax.random.PRNGKey(0)),
                             jax.device_put(plain, sharding_lib.batch_sharding(mesh)))
  assert abs(float(unaugmented['grad_norm']) / float(on_host['grad_norm']) - 1) > 1e-3


def test_train_step_rejects_batches_without_epoch_and_index():
  config, mesh, model, tx, init, shardings = _step_setup(True)
  batch = {k: v for k, v in _uint8_batch().items() if k not in ('epoch', 'index')}
  step = steps_lib.make_train_step(model, tx, config, 4, mesh, shardings)
  with pytest.raises(ValueError, match=r"augment_device=True .* lacks \['epoch', 'index'\]"):
    step(init(jax.random.PRNGKey(0)), jax.device_put(batch, sharding_lib.batch_sharding(mesh)))
  normalised = dict(_uint8_batch(), image=np.zeros((16, 16, 16, 3), np.float32))
  with pytest.raises(ValueError, match='augment_device=True .* float32, not uint8'):
    augment_device.train_images(normalised, config)


def test_eval_step_only_normalises_uint8_images():
  config, mesh, model, _, init, shardings = _step_setup(True)
  task = tasks.get(config)
  state = init(jax.random.PRNGKey(0))
  batch = {k: v for k, v in _uint8_batch().items() if k not in ('epoch', 'index')}
  put = lambda b: jax.device_put(b, sharding_lib.batch_sharding(mesh))
  on_uint8 = steps_lib.make_eval_step(model, mesh, shardings, False, task,
                                      data_config=config.data)(state, put(batch))
  images = np.array(augment_device.normalise(batch['image'], config.data))
  images[batch['valid'] == 0] = 0.0  # padding rows, as the host sends them
  normalised = dict(batch, image=images)
  on_float = steps_lib.make_eval_step(model, mesh, shardings, False, task)(state,
                                                                          put(normalised))
  for k in on_float:
    np.testing.assert_allclose(on_uint8[k], on_float[k], rtol=1e-5, err_msg=k)
  with pytest.raises(ValueError, match='data_config'):
    steps_lib.make_eval_step(model, mesh, shardings, False, task)(state, put(batch))


def test_sub_policy_choice_is_the_draw_augment_one_applies():
  """sub_policy_choice reads the same draw augment_one applies: examples that drew
  sub-policy 8, (Color 0.6 level 1, Equalize 1.0 level 2), come out equalized, colored
  first or not, and nothing else."""
  image = _images(9, n=1, h=16, w=16)[0]
  keys = _keys(400)
  choice = np.asarray(jax.jit(jax.vmap(
      lambda k: augment_device.sub_policy_choice('autoaugment', k)))(keys))
  outs = np.asarray(jax.jit(jax.vmap(lambda k: augment_device.augment_one(
      image, k, kind='autoaugment', flip=False)))(keys[choice == 8]))
  plain = np.asarray(augment_device.apply_op(image, 'Equalize', 2))
  colored = np.asarray(augment_device.apply_op(
      augment_device.apply_op(image, 'Color', 1), 'Equalize', 2))
  # Color's fractional outputs differ in the last float32 bits when jitted.
  seen = collections.Counter('plain' if np.array_equal(o, plain) else
                             'color' if np.abs(o - colored).max() < 1e-3 else 'other'
                             for o in outs)
  assert seen['other'] == 0 and seen['plain'] > 0 and seen['color'] > 0, seen


def test_rows_with_valid_0_reach_the_model_as_zeros():
  """Bad examples / eval padding: zeros after normalisation, as the host sends them (they
  then add the same values to BatchNorm's batch statistics)."""
  config, *_ = _step_setup(True)
  batch = _uint8_batch()
  train = np.asarray(jax.jit(lambda b: augment_device.train_images(b, config))(batch))
  evaluated = np.asarray(jax.jit(lambda b: augment_device.eval_images(b, config.data))(batch))
  for images in (train, evaluated):
    assert (images[5] == 0).all() and (images[[4, 6]] != 0).mean() > 0.9
  np.testing.assert_allclose(evaluated[4], augment_device.normalise(batch['image'][4],
                                                                    config.data))


@pytest.mark.parametrize('kind', ['autoaugment', 'randaugment'])
def test_fixed_work_per_example_no_branches(kind):
  """No cond / switch: every example runs the same ops, whichever sub-policy it drew."""
  images = np.zeros((2, 16, 16, 3), np.uint8)
  index = np.arange(2, dtype=np.int32)
  jaxpr = str(jax.make_jaxpr(lambda x: augment_device.augment_batch(
      x, index, index, 0, **_config(kind)))(images))
  assert ' cond[' not in jaxpr and 'switch' not in jaxpr and 'while[' not in jaxpr
  assert jaxpr.count('gather[') >= 2  # the op slots' resampling and table lookups
