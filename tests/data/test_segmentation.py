"""Segmentation preprocessing keeps image and mask aligned and pads with ignore."""

import numpy as np
import pytest
import tensorflow as tf

from vt_jax.data import segmentation

IGNORE = 255
CODE = 20.0  # Image channels 0, 1 = CODE * class, 2 * class**2: the image encodes its mask.


def _encoded_example(height=96, width=80, block=16, seed=0):
  """Blocky random mask whose class is written into the image's pixel values."""
  rng = np.random.default_rng(seed)
  blocks = rng.integers(0, 10, size=(-(-height // block), -(-width // block)))
  mask = np.kron(blocks, np.ones((block, block), np.int64))[:height, :width]
  image = np.stack([mask * CODE, 2 * mask**2, np.full_like(mask, 9)], -1)
  return {'image': tf.constant(image, tf.uint8), 'mask': tf.constant(mask, tf.uint8)}


def _check_aligned(out):
  image, mask = out['image'].numpy(), out['mask'].numpy()
  padded = mask == IGNORE
  np.testing.assert_allclose(image[padded], np.broadcast_to(
      segmentation.IMAGENET_MEAN, image[padded].shape), atol=1e-4)
  # Bilinear resizing blends neighbouring classes; a blend has
  # mean(c**2) > mean(c)**2 (strict convexity), so "pure" pixels -- those
  # interpolated from one class only -- are recognised exactly.
  code = image[..., 0] / CODE
  pure = ((~padded) & (np.abs(code - np.round(code)) < 1e-3)
          & (np.abs(image[..., 1] - 2 * code**2) < 1e-2))
  # Most labelled pixels lie inside a block: the check is not vacuous.
  assert pure.sum() > 0.3 * (~padded).sum()
  np.testing.assert_array_equal(mask[pure], np.round(code[pure]).astype(np.int32))
  assert set(np.unique(mask[~padded])) <= set(range(10))


@pytest.mark.parametrize('seed', range(6))
def test_train_preprocess_keeps_image_and_mask_aligned(seed):
  out = segmentation.train_preprocess(
      _encoded_example(seed=seed), crop_size=64, scale_range=(0.5, 2.0),
      ignore_label=IGNORE, seed=seed)
  assert out['image'].dtype == tf.float32 and out['image'].shape == (64, 64, 3)
  assert out['mask'].dtype == tf.int32 and out['mask'].shape == (64, 64)
  _check_aligned(out)


def test_flip_and_crop_vary_with_seed_and_are_deterministic():
  example = _encoded_example()
  outs = [segmentation.train_preprocess(example, crop_size=48, scale_range=(1.0, 1.0),
                                        ignore_label=IGNORE, seed=[s, 3])
          for s in range(12)]
  again = segmentation.train_preprocess(example, crop_size=48, scale_range=(1.0, 1.0),
                                        ignore_label=IGNORE, seed=[0, 3])
  np.testing.assert_array_equal(outs[0]['mask'], again['mask'])
  np.testing.assert_array_equal(outs[0]['image'], again['image'])
  # At scale 1 each output is a (possibly mirrored) window of the original mask.
  mask = example['mask'].numpy().astype(np.int32)
  flipped = 0
  for out in outs:
    m = out['mask'].numpy()
    windows = {(y, x, f) for f in (0, 1) for y in range(96 - 48 + 1) for x in range(80 - 48 + 1)
               if np.array_equal((mask[:, ::-1] if f else mask)[y:y + 48, x:x + 48], m)}
    assert windows, 'output is not a crop of the input'
    flipped += all(f for _, _, f in windows)
  assert 0 < flipped < len(outs)
  assert len({o['mask'].numpy().tobytes() for o in outs}) > 6


def test_flip_false_never_mirrors_and_keeps_the_same_crops():
  """config.data.flip=False (digits): every output is an unmirrored window, and the one
  a mirrored output of flip=True came from (same seed -> same crop either way)."""
  example = _encoded_example()
  mask = example['mask'].numpy().astype(np.int32)
  mirrored_seen = 0
  for s in range(12):
    kw = dict(crop_size=48, scale_range=(1.0, 1.0), ignore_label=IGNORE, seed=[s, 3])
    plain = segmentation.train_preprocess(example, flip=False, **kw)['mask'].numpy()
    default = segmentation.train_preprocess(example, **kw)['mask'].numpy()
    assert any(np.array_equal(mask[y:y + 48, x:x + 48], plain)
               for y in range(96 - 48 + 1) for x in range(80 - 48 + 1)), s
    if not np.array_equal(plain, default):
      np.testing.assert_array_equal(plain[:, ::-1], default)
      mirrored_seen += 1
  assert mirrored_seen > 0  # flip=True did mirror some of these seeds


def test_train_pads_small_images_with_ignore_and_mean():
  example = _encoded_example(height=20, width=30, block=5)
  out = segmentation.train_preprocess(example, crop_size=(40, 50), scale_range=(1.0, 1.0),
                                      ignore_label=IGNORE, seed=1)
  mask = out['mask'].numpy()
  assert mask.shape == (40, 50)
  assert (mask != IGNORE).sum() == 20 * 30
  _check_aligned(out)


def test_train_scale_changes_labelled_area():
  example = _encoded_example(height=20, width=30, block=5)
  out = segmentation.train_preprocess(example, crop_size=80, scale_range=(2.0, 2.0),
                                      ignore_label=IGNORE, seed=5)
  assert (out['mask'].numpy() != IGNORE).sum() == 40 * 60


def test_eval_pads_without_touching_labels_and_fits_large_images():
  small = _encoded_example(height=40, width=30, block=4)
  out = segmentation.eval_preprocess(small, crop_size=64, ignore_label=IGNORE)
  mask = out['mask'].numpy()
  np.testing.assert_array_equal(mask[:40, :30], small['mask'].numpy())
  assert (mask[40:] == IGNORE).all() and (mask[:, 30:] == IGNORE).all()
  np.testing.assert_array_equal(out['image'].numpy()[:40, :30], small['image'].numpy())

  large = _encoded_example(height=128, width=96, block=16)
  out = segmentation.eval_preprocess(large, crop_size=64, ignore_label=IGNORE)
  mask = out['mask'].numpy()
  assert (mask != IGNORE).sum() == 64 * 48  # Aspect kept: 128x96 -> 64x48.
  _check_aligned(out)


def test_mask_with_channel_axis_and_inside_tf_data():
  example = _encoded_example()
  ds = tf.data.Dataset.from_tensors({'image': example['image'],
                                     'mask': example['mask'][:, :, None]})
  ds = ds.map(lambda f: segmentation.train_preprocess(
      f, crop_size=32, scale_range=(0.75, 1.25), ignore_label=IGNORE,
      seed=tf.constant([1, 2], tf.int64)))
  assert ds.element_spec['image'].shape == (32, 32, 3)
  assert ds.element_spec['mask'].shape == (32, 32)
  _check_aligned(next(iter(ds)))


def test_bad_scale_range_is_named():
  with pytest.raises(ValueError, match='scale_range'):
    segmentation.train_preprocess(_encoded_example(), crop_size=32, scale_range=(2.0, 1.0),
                                  ignore_label=IGNORE, seed=0)
