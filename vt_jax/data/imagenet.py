"""ImageNet-style classification preprocessing (tf ops, stateless randomness).

train: Inception random-resized crop (area 8%-100%, aspect 3/4-4/3) decoded
       straight from the JPEG crop window, horizontal flip, optional AutoAugment /
       RandAugment (`augment.py`).
eval:  resize the shorter side to `eval_resize` (256), centre crop `image_size` (224).
Both return float32 [size, size, 3] in 0..255; normalisation happens in the
pipeline. `seed` is a [2] int tensor; equal seeds give equal outputs.
"""

from __future__ import annotations

import tensorflow as tf

from vt_jax.data import augment as augment_lib


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
  """Any of JPEG/PNG/GIF/BMP -> uint8 [H, W, 3]; raises on undecodable bytes."""
  image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def decode_and_random_crop(image_bytes: tf.Tensor, seed: tf.Tensor, size: int,
                           area_range=(0.08, 1.0),
                           aspect_range=(3 / 4, 4 / 3)) -> tf.Tensor:
  """Inception crop, decoding only the crop window when the bytes are JPEG."""
  is_jpeg = tf.io.is_jpeg(image_bytes)
  shape = tf.cond(is_jpeg, lambda: tf.image.extract_jpeg_shape(image_bytes),
                  lambda: tf.shape(decode_image(image_bytes)))
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=0.0, aspect_ratio_range=aspect_range,
      area_range=area_range, max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
  crop = tf.cond(
      is_jpeg,
      lambda: tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3),
      lambda: tf.slice(decode_image(image_bytes), begin, crop_size))
  crop.set_shape([None, None, 3])
  return tf.image.resize(crop, [size, size], method='bilinear')


def resize_short_and_center_crop(image: tf.Tensor, resize: int,
                                 size: int) -> tf.Tensor:
  """uint8/float [H, W, 3] -> float32 [size, size, 3]."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = resize / tf.reduce_min(shape)
  new_hw = tf.cast(tf.round(shape * scale), tf.int32)
  image = tf.image.resize(image, new_hw, method='bilinear', antialias=True)
  top = (new_hw[0] - size) // 2
  left = (new_hw[1] - size) // 2
  return tf.image.crop_to_bounding_box(image, top, left, size, size)


def _train_seeds(seed):
  return tf.unstack(tf.random.experimental.stateless_split(seed, num=3))


def train_decode_crop(image_bytes: tf.Tensor, seed: tf.Tensor, *,
                      image_size: int) -> tf.Tensor:
  """First half of `train_preprocess`: the part that can fail on bad bytes."""
  return decode_and_random_crop(image_bytes, _train_seeds(seed)[0], image_size)


def train_flip_augment(image: tf.Tensor, seed: tf.Tensor, *, augment: str = 'none',
                       randaugment_layers: int = 2,
                       randaugment_magnitude: float = 9.0) -> tf.Tensor:
  """Second half of `train_preprocess` (same `seed`)."""
  _, flip_seed, aug_seed = _train_seeds(seed)
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return augment_lib.apply(augment, image, aug_seed,
                           randaugment_layers=randaugment_layers,
                           randaugment_magnitude=randaugment_magnitude)


def train_preprocess(image_bytes: tf.Tensor, seed: tf.Tensor, *, image_size: int,
                     augment: str = 'none', randaugment_layers: int = 2,
                     randaugment_magnitude: float = 9.0) -> tf.Tensor:
  image = train_decode_crop(image_bytes, seed, image_size=image_size)
  return train_flip_augment(image, seed, augment=augment,
                            randaugment_layers=randaugment_layers,
                            randaugment_magnitude=randaugment_magnitude)


def eval_preprocess(image_bytes: tf.Tensor, *, image_size: int,
                    eval_resize: int) -> tf.Tensor:
  return resize_short_and_center_crop(decode_image(image_bytes), eval_resize,
                                      image_size)
