"""Segmentation preprocessing: image and mask transformed together (tf ops).

Used by the input pipeline on tfds examples {'image': uint8 [H, W, 3],
'mask': integer [H, W] (or [H, W, 1])}. Both functions return
{'image': float32 [crop_h, crop_w, 3] (unnormalised, 0..255),
 'mask': int32 [crop_h, crop_w]} where pixels without a label (padding) hold
`ignore_label`, so losses and metrics that skip `ignore_label` never count them.

Geometry: the image is resized bilinearly and the mask with nearest neighbour
by the same `tf.image.resize` call geometry (half-pixel centres), so a mask
pixel always carries a label of the image pixel it lies on and no new label
values appear. Padding goes to the bottom/right: the image is padded with
`image_pad_value` (the ImageNet mean by default, which normalises to 0), the
mask with `ignore_label`.

Randomness (train only) comes from stateless ops driven by `seed`, so a given
(example, seed) always gives the same crop: the pipeline derives one seed per
example (e.g. from the config seed and the example's position).
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

# The default image padding: the ImageNet mean (RGB, 0..255) normalises to 0.
from vt_jax.config_lib.data import IMAGENET_MEAN

Size = int | Sequence[int]


def _pair(crop_size: Size) -> tuple[int, int]:
  if isinstance(crop_size, int):
    return crop_size, crop_size
  height, width = crop_size
  return int(height), int(width)


def _seed(seed) -> tf.Tensor:
  """int or int [2] -> int64 [2] stateless seed."""
  seed = tf.convert_to_tensor(seed)
  if seed.shape.rank == 0:
    seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
  return tf.cast(seed, tf.int64)


def _inputs(features) -> tuple[tf.Tensor, tf.Tensor]:
  """Returns image float32 [H, W, 3] and mask int32 [H, W, 1]."""
  image = tf.ensure_shape(tf.convert_to_tensor(features['image']), [None, None, 3])
  mask = tf.convert_to_tensor(features['mask'])
  if mask.shape.rank == 2:
    mask = mask[:, :, None]
  mask = tf.cast(tf.ensure_shape(mask, [None, None, 1]), tf.int32)
  tf.debugging.assert_equal(
      tf.shape(image)[:2], tf.shape(mask)[:2],
      message='segmentation: image and mask differ in height/width')
  return tf.cast(image, tf.float32), mask


def _resize(image, mask, height, width):
  image = tf.image.resize(image, [height, width], method='bilinear')
  # Nearest keeps label values exact (no blending of class ids).
  mask = tf.image.resize(mask, [height, width], method='nearest')
  return image, mask


def _pad_to(image, mask, height, width, ignore_label, image_pad_value):
  """Pads bottom/right to at least [height, width]: image with the pad value, mask with ignore."""
  shape = tf.shape(image)
  pad_h = tf.maximum(height - shape[0], 0)
  pad_w = tf.maximum(width - shape[1], 0)
  paddings = [[0, pad_h], [0, pad_w], [0, 0]]
  inside = tf.pad(tf.ones_like(mask, tf.bool), paddings, constant_values=False)
  fill = tf.constant(image_pad_value, tf.float32)
  image = tf.where(inside, tf.pad(image, paddings), fill)
  mask = tf.pad(mask, paddings, constant_values=ignore_label)
  return image, mask


def _outputs(image, mask, height, width):
  return {'image': tf.ensure_shape(image, [height, width, 3]),
          'mask': tf.ensure_shape(mask[:, :, 0], [height, width])}


def train_preprocess(
    features, *, crop_size: Size, scale_range: tuple[float, float],
    ignore_label: int, seed, image_pad_value: Sequence[float] = IMAGENET_MEAN,
    flip: bool = True):
  """Random scale, pad, random crop and (if `flip`) horizontal flip of image and mask.

  Args:
    features: {'image': uint8 [H, W, 3], 'mask': integer [H, W] or [H, W, 1]}.
    crop_size: output side (int) or (height, width).
    scale_range: (min, max) factor of the original size, drawn uniformly.
    ignore_label: mask value for padded pixels.
    seed: int or int [2] tensor for the stateless random ops.
    image_pad_value: RGB value (0..255) of padded image pixels.
    flip: mirror left-right with probability 1/2 (config.data.flip). Off for data whose
      classes are not mirror-symmetric (digits: a mirrored 2 is no digit).

  Returns:
    {'image': float32 [crop_h, crop_w, 3] in 0..255, 'mask': int32 [crop_h, crop_w]}.
  """
  low, high = scale_range
  if not 0 < low <= high:
    raise ValueError(f'segmentation.train_preprocess: scale_range must satisfy '
                     f'0 < min <= max, got {scale_range}.')
  crop_h, crop_w = _pair(crop_size)
  image, mask = _inputs(features)
  scale_seed, y_seed, x_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(_seed(seed), num=4))

  scale = tf.random.stateless_uniform([], scale_seed, minval=low, maxval=high)
  size = tf.cast(tf.shape(image)[:2], tf.float32)
  new_size = tf.maximum(tf.cast(tf.round(size * scale), tf.int32), 1)
  image, mask = _resize(image, mask, new_size[0], new_size[1])
  image, mask = _pad_to(image, mask, crop_h, crop_w, ignore_label, image_pad_value)

  shape = tf.shape(image)
  y = tf.random.stateless_uniform([], y_seed, minval=0, maxval=shape[0] - crop_h + 1,
                                  dtype=tf.int32)
  x = tf.random.stateless_uniform([], x_seed, minval=0, maxval=shape[1] - crop_w + 1,
                                  dtype=tf.int32)
  image = image[y:y + crop_h, x:x + crop_w]
  mask = mask[y:y + crop_h, x:x + crop_w]

  if flip:  # the seed split above is the same either way: crops do not depend on `flip`
    mirror = tf.random.stateless_uniform([], flip_seed) < 0.5
    image = tf.cond(mirror, lambda: image[:, ::-1], lambda: image)
    mask = tf.cond(mirror, lambda: mask[:, ::-1], lambda: mask)
  return _outputs(image, mask, crop_h, crop_w)


def eval_preprocess(
    features, *, crop_size: Size, ignore_label: int,
    image_pad_value: Sequence[float] = IMAGENET_MEAN):
  """Fits the example into crop_size (downscale only, keep aspect), pads the rest.

  An example no larger than crop_size is only padded, so its labels are exactly
  the stored ones; a larger one is downscaled to fit (mask by nearest
  neighbour). Padded pixels have mask `ignore_label` and never count.

  Args:
    features: {'image': uint8 [H, W, 3], 'mask': integer [H, W] or [H, W, 1]}.
    crop_size: output side (int) or (height, width).
    ignore_label: mask value for padded pixels.
    image_pad_value: RGB value (0..255) of padded image pixels.

  Returns:
    {'image': float32 [crop_h, crop_w, 3] in 0..255, 'mask': int32 [crop_h, crop_w]}.
  """
  crop_h, crop_w = _pair(crop_size)
  image, mask = _inputs(features)
  size = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = tf.minimum(1.0, tf.minimum(crop_h / size[0], crop_w / size[1]))
  # Floor so the fitted size never exceeds the crop; at least one pixel.
  new_size = tf.clip_by_value(tf.cast(tf.floor(size * scale + 1e-4), tf.int32),
                              1, [crop_h, crop_w])
  image, mask = tf.cond(
      scale < 1.0,
      lambda: _resize(image, mask, new_size[0], new_size[1]),
      lambda: (image, mask))
  image, mask = _pad_to(image, mask, crop_h, crop_w, ignore_label, image_pad_value)
  return _outputs(image, mask, crop_h, crop_w)
