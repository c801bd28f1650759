"""AutoAugment (ImageNet policy) and RandAugment in plain TF ops, stateless.

Hand-written because no library installed here ships them for tf.data:
tensorflow-addons is discontinued (no TF 2.21 wheel), keras_cv's layers are
stateful Keras layers (their randomness cannot be keyed by example for exact
resume), and tf-models-official is not a dependency. Every random choice below
comes from `tf.random.stateless_*` with a [2] seed derived from the example,
so a given (seed, image) always gives the same output.

Ops act on float32 images holding integer values 0..255, magnitudes follow the
0..10 level scale of the AutoAugment / RandAugment papers (Cubuk et al. 2019,
2020).
"""

from __future__ import annotations

import math

import tensorflow as tf

# The policies' tables, shared with the device path (vt_jax.data.augment_device).
from vt_jax.data.policies import IMAGENET_POLICY, KINDS, RANDAUGMENT_OPS

_MAX_LEVEL = 10.0
_FILL = 128.0  # grey fill for pixels that geometric ops move in from outside


def _blend(degenerate, image, factor):
  return tf.clip_by_value(degenerate + factor * (image - degenerate), 0., 255.)


def _gray(image):
  return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def _transform(image, matrix):
  """Projective transform; `matrix` = 8 floats mapping output -> input coords."""
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=tf.cast(matrix, tf.float32)[None],
      output_shape=tf.shape(image)[:2], fill_value=_FILL,
      interpolation='NEAREST', fill_mode='CONSTANT')
  return out[0]


def rotate(image, degrees):
  h = tf.cast(tf.shape(image)[0], tf.float32)
  w = tf.cast(tf.shape(image)[1], tf.float32)
  a = degrees * math.pi / 180.0  # counter-clockwise, as PIL
  cos, sin = tf.cos(a), tf.sin(a)
  # rotate about the centre: x_in = cos*x - sin*y + tx, y_in = sin*x + cos*y + ty
  tx = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2
  ty = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2
  return _transform(image, [cos, -sin, tx, sin, cos, ty, 0., 0.])


def shear_x(image, level):
  return _transform(image, [1., level, 0., 0., 1., 0., 0., 0.])


def shear_y(image, level):
  return _transform(image, [1., 0., 0., level, 1., 0., 0., 0.])


def translate_x(image, pixels):
  return _transform(image, [1., 0., -pixels, 0., 1., 0., 0., 0.])


def translate_y(image, pixels):
  return _transform(image, [1., 0., 0., 0., 1., -pixels, 0., 0.])


def auto_contrast(image):
  lo = tf.reduce_min(image, axis=[0, 1], keepdims=True)
  hi = tf.reduce_max(image, axis=[0, 1], keepdims=True)
  scaled = (image - lo) * 255.0 / tf.maximum(hi - lo, 1.0)
  return tf.where(hi > lo, scaled, image)


def _equalize_channel(channel):
  """PIL's ImageOps.equalize for one channel of integer values 0..255."""
  values = tf.cast(channel, tf.int32)
  hist = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256)
  last_nonzero = tf.gather(hist, tf.reduce_max(tf.where(hist > 0)))
  step = (tf.reduce_sum(hist) - last_nonzero) // 255
  cum = tf.cumsum(hist)
  lut = tf.concat([[0], (cum[:-1] + step // 2) // tf.maximum(step, 1)], 0)
  lut = tf.clip_by_value(lut, 0, 255)
  equalized = tf.cast(tf.gather(lut, values), tf.float32)
  return tf.where(step > 0, equalized, channel)


def equalize(image):
  return tf.stack([_equalize_channel(image[..., c]) for c in range(3)], -1)


def invert(image):
  return 255.0 - image


def posterize(image, bits):
  shift = 2.0 ** tf.cast(8 - bits, tf.float32)
  return tf.floor(image / shift) * shift


def solarize(image, threshold):
  return tf.where(image < threshold, image, 255.0 - image)


def solarize_add(image, addition, threshold=128.0):
  return tf.where(image < threshold,
                  tf.clip_by_value(image + addition, 0., 255.), image)


def color(image, factor):
  return _blend(_gray(image), image, factor)


def contrast(image, factor):
  mean = tf.reduce_mean(tf.image.rgb_to_grayscale(image))
  return _blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image, factor):
  return _blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
  """Blend with a 3x3 smoothed image (PIL's SMOOTH kernel), borders untouched."""
  kernel = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], 'VALID')[0]
  smooth = tf.round(smooth)
  smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
  mask = tf.pad(tf.ones_like(smooth[1:-1, 1:-1]), [[1, 1], [1, 1], [0, 0]])
  degenerate = mask * smooth + (1 - mask) * image
  return _blend(degenerate, image, factor)


def cutout(image, seed, pad_size):
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  cy = tf.random.stateless_uniform([], seed, 0, h, tf.int32)
  cx = tf.random.stateless_uniform([], seed + 1, 0, w, tf.int32)
  ys = tf.range(h)[:, None, None]
  xs = tf.range(w)[None, :, None]
  inside = (tf.abs(ys - cy) < pad_size) & (tf.abs(xs - cx) < pad_size)
  return tf.where(inside, _FILL, image)


def _signed(value, seed):
  flip = tf.random.stateless_uniform([], seed) < 0.5
  return tf.where(flip, -value, value)


def _op(name: str, image, level: float, seed):
  """Applies op `name` at `level` (0..10); `seed` drives sign and position."""
  m = level / _MAX_LEVEL
  size = tf.cast(tf.shape(image)[0], tf.float32)
  ops = {
      'AutoContrast': lambda: auto_contrast(image),
      'Equalize': lambda: equalize(image),
      'Invert': lambda: invert(image),
      'Rotate': lambda: rotate(image, _signed(30.0 * m, seed)),
      'Posterize': lambda: posterize(image, int(m * 4)),
      'Solarize': lambda: solarize(image, 256.0 * m),
      'SolarizeAdd': lambda: solarize_add(image, float(int(110 * m))),
      'Color': lambda: color(image, 1.8 * m + 0.1),
      'Contrast': lambda: contrast(image, 1.8 * m + 0.1),
      'Brightness': lambda: brightness(image, 1.8 * m + 0.1),
      'Sharpness': lambda: sharpness(image, 1.8 * m + 0.1),
      'ShearX': lambda: shear_x(image, _signed(0.3 * m, seed)),
      'ShearY': lambda: shear_y(image, _signed(0.3 * m, seed)),
      # 100 px at 224 in the papers: a fraction of the image size here.
      'TranslateX': lambda: translate_x(image, _signed(0.45 * m * size, seed)),
      'TranslateY': lambda: translate_y(image, _signed(0.45 * m * size, seed)),
      'Cutout': lambda: cutout(image, seed, tf.cast(0.18 * m * size, tf.int32)),
  }
  return ops[name]()


def autoaugment(image, seed):
  """One uniformly chosen ImageNet sub-policy; each op fires with its prob."""
  seeds = tf.random.experimental.stateless_split(seed, num=5)
  choice = tf.random.stateless_uniform([], seeds[0], 0, len(IMAGENET_POLICY),
                                       tf.int32)

  def branch(sub_policy):
    def run():
      out = image
      for j, (name, prob, level) in enumerate(sub_policy):
        fire = tf.random.stateless_uniform([], seeds[1 + 2 * j]) < prob
        op_seed = seeds[2 + 2 * j]
        out = tf.cond(fire, lambda o=out, n=name, l=level, s=op_seed: _op(n, o, l, s),
                      lambda o=out: o)
      return out
    return run

  return tf.switch_case(choice, [branch(p) for p in IMAGENET_POLICY])


def randaugment(image, seed, num_layers: int = 2, magnitude: float = 9.0):
  """`num_layers` ops drawn uniformly from RANDAUGMENT_OPS at `magnitude`."""
  seeds = tf.random.experimental.stateless_split(seed, num=2 * num_layers)
  for i in range(num_layers):
    choice = tf.random.stateless_uniform([], seeds[2 * i], 0,
                                         len(RANDAUGMENT_OPS), tf.int32)
    image = tf.switch_case(choice, [
        (lambda n=name, im=image, s=seeds[2 * i + 1]: _op(n, im, magnitude, s))
        for name in RANDAUGMENT_OPS])
  return image


def apply(kind: str, image, seed, *, randaugment_layers: int = 2,
          randaugment_magnitude: float = 9.0):
  """config.data.augment dispatch: 'none' | 'autoaugment' | 'randaugment'.

  image: float32 [H, W, 3] in 0..255 -> same shape/range (integer-valued when
  an augmentation runs).
  """
  if kind == 'none':
    return image
  image = tf.round(tf.clip_by_value(image, 0., 255.))
  shape = image.shape
  if kind == 'autoaugment':
    out = autoaugment(image, seed)
  elif kind == 'randaugment':
    out = randaugment(image, seed, randaugment_layers, randaugment_magnitude)
  else:
    raise ValueError(f"config.data.augment={kind!r}: expected one of {list(KINDS)}")
  out.set_shape(shape)
  return out
