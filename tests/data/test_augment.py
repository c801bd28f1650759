"""AutoAugment / RandAugment ops: parity with PIL, determinism, shapes."""

import numpy as np
from PIL import Image, ImageOps
import pytest
import tensorflow as tf

from vt_jax.data import augment
from vt_jax.data import imagenet


def _image(seed=0, h=17, w=17):
  rng = np.random.default_rng(seed)
  # Mostly narrow range so equalize / autocontrast have work to do.
  return rng.integers(40, 180, (h, w, 3)).astype(np.uint8)


def _tf(x):
  return tf.constant(x, tf.float32)


@pytest.mark.parametrize('name,ours,pil', [
    ('equalize', augment.equalize, ImageOps.equalize),
    ('invert', augment.invert, ImageOps.invert),
    ('posterize3', lambda x: augment.posterize(x, 3),
     lambda im: ImageOps.posterize(im, 3)),
    ('solarize', lambda x: augment.solarize(x, 100.0),
     lambda im: ImageOps.solarize(im, 100)),
    ('rotate90', lambda x: augment.rotate(x, 90.0),
     lambda im: im.rotate(90, resample=Image.NEAREST)),
])
def test_ops_match_pil(name, ours, pil):
  del name
  x = _image()
  expected = np.asarray(pil(Image.fromarray(x)))
  np.testing.assert_array_equal(ours(_tf(x)).numpy().astype(np.uint8), expected)


def test_autocontrast_matches_pil_within_rounding():
  x = _image(1)
  expected = np.asarray(ImageOps.autocontrast(Image.fromarray(x))).astype(float)
  ours = augment.auto_contrast(_tf(x)).numpy()
  assert np.abs(ours - expected).max() <= 1.0
  assert ours.min() == 0 and ours.max() == 255


@pytest.mark.parametrize('kind', ['autoaugment', 'randaugment'])
def test_policies_are_deterministic_per_seed_and_keep_shape_and_range(kind):
  x = _tf(_image(2, 24, 20))
  outs = [augment.apply(kind, x, tf.constant([s, 7], tf.int64)).numpy()
          for s in (0, 0, 1, 2, 3, 4, 5)]
  np.testing.assert_array_equal(outs[0], outs[1])
  assert len({o.tobytes() for o in outs[1:]}) > 2  # seeds pick different ops
  for o in outs:
    assert o.shape == (24, 20, 3) and o.min() >= 0 and o.max() <= 255


def test_every_op_runs_at_max_level():
  x = _tf(_image(3))
  for name in set(augment.RANDAUGMENT_OPS) | {
      op for sub in augment.IMAGENET_POLICY for op, _, _ in sub}:
    out = augment._op(name, x, 10.0, tf.constant([1, 2], tf.int64)).numpy()
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 255, name


def test_unknown_augment_names_the_field():
  with pytest.raises(ValueError, match='config.data.augment'):
    augment.apply('autoaug', _tf(_image()), tf.constant([0, 0], tf.int64))


def test_eval_preprocess_resizes_short_side_then_centre_crops():
  x = np.zeros((40, 80, 3), np.uint8)
  x[:, 20:60] = 200  # bright centre band: exactly the 40-px-wide centre crop
  jpeg = tf.io.encode_png(x)
  out = imagenet.eval_preprocess(jpeg, image_size=16, eval_resize=16).numpy()
  assert out.shape == (16, 16, 3)
  np.testing.assert_allclose(out[:, 2:-2], 200, atol=1)


def test_inception_crop_is_deterministic_and_sized():
  jpeg = tf.io.encode_jpeg(tf.constant(_image(4, 64, 48)))
  seed = tf.constant([3, 9], tf.int64)
  a = imagenet.train_preprocess(jpeg, seed, image_size=24).numpy()
  b = imagenet.train_preprocess(jpeg, seed, image_size=24).numpy()
  c = imagenet.train_preprocess(jpeg, seed + 1, image_size=24).numpy()
  np.testing.assert_array_equal(a, b)
  assert a.shape == (24, 24, 3) and not np.array_equal(a, c)
