"""Per-example processing in two stages: `decode` (may fail) and `finish`.

`decode` holds every op that bad data can make fail -- image/mask decoding,
label and mask-class checks, and the ImageNet train crop that decodes only the
crop window; `finish` augments, resizes and normalises. The pipeline runs both
(`process`) in one `tf.function` per example and turns an error into a `bad` row.

With `config.data.augment_device=True` (classification, train) the host stops
after the crop and resize: no flip, no colour or policy augmentation, no
normalisation; the image leaves as uint8 and the train step augments it on the
accelerator, keyed by the example's (seed, epoch, index).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vt_jax.config_lib import data as config_data
from vt_jax.data import augment as augment_lib
from vt_jax.data import imagenet


def _field(cfg, name, default=None):
  return cfg.get(name, default) if hasattr(cfg, 'get') else default


class Processor:
  """Decodes, validates and preprocesses examples of one dataset and split."""

  def __init__(self, cfg, builder, train: bool, num_classes: int):
    self.cfg, self.train = cfg, train
    self.task = _field(cfg, 'task', 'classification')
    self.kind = _field(cfg, 'preprocess', 'imagenet')
    if self.task == 'classification' and self.kind not in ('imagenet', 'resize'):
      raise ValueError(f"config.data.preprocess={self.kind!r}: expected "
                       "'imagenet' or 'resize'")
    self.num_classes = num_classes
    features = builder.info.features
    self.has_label = 'label' in features
    # Image-level label classes: the ClassLabel's own count when there is one
    # (digit_scenes: 10 digits, while its masks have 11 classes).
    label_feature = features['label'] if self.has_label else None
    self.label_classes = int(getattr(label_feature, 'num_classes', None) or
                             num_classes)
    if self.task == 'segmentation':
      from vt_jax.data import segmentation  # pylint: disable=g-import-not-at-top
      self.seg = segmentation
      self.ignore_label = int(cfg.ignore_label)
      self.mask_is_image = isinstance(features['mask'], tfds.features.Image)
    if (self.task == 'classification' and not train and self.kind == 'imagenet'
        and cfg.eval_resize < cfg.image_size):
      raise ValueError(
          f'config.data.eval_resize={cfg.eval_resize} is smaller than '
          f'config.data.image_size={cfg.image_size}: the eval centre crop must '
          'fit inside the resized image (ImageNet: 256 and 224).')
    mean = _field(cfg, 'mean', config_data.IMAGENET_MEAN)
    std = _field(cfg, 'std', config_data.IMAGENET_STD)
    self.pad_value = tuple(float(m) for m in mean)  # normalises to 0
    self.mean = tf.constant(mean, tf.float32)
    self.std = tf.constant(std, tf.float32)
    self.device_augment = bool(_field(cfg, 'augment_device', False))
    if self.device_augment and self.task != 'classification':
      raise ValueError(
          f'config.data.augment_device=True but config.data.task={self.task!r}: '
          'segmentation augments image and mask together on the host; set '
          'config.data.augment_device=False.')
    self.device_augment = self.device_augment and train
    self.aug = dict(
        randaugment_layers=_field(cfg, 'randaugment_layers', 2),
        randaugment_magnitude=_field(cfg, 'randaugment_magnitude', 9.0))

  # --- stage 1: may fail --------------------------------------------------------

  def _checks(self, features, mask):
    checks = []
    if self.has_label:
      label = features['label']
      checks += [tf.debugging.assert_non_negative(
                     label, message='label out of range: negative'),
                 tf.debugging.assert_less(
                     label, tf.cast(self.label_classes, label.dtype),
                     message=f'label out of range [0, {self.label_classes})')]
    if mask is not None:
      known = ((mask >= 0) & (mask < self.num_classes)) | (mask == self.ignore_label)
      checks.append(tf.debugging.assert_equal(
          tf.reduce_all(known), True,
          message=f'mask has classes outside [0, {self.num_classes}) that are '
                  f'not the ignore_label {self.ignore_label}'))
    return checks

  def decode(self, epoch, index, features, base_seed):
    """-> dict(image, label, [mask], index, seed, bad=False); raises on bad data."""
    seed = tf.stack([base_seed * 1_000_003 + epoch, index])
    image_bytes, mask = features['image'], None
    if self.task == 'segmentation':
      image = tf.cast(imagenet.decode_image(image_bytes), tf.float32)
      mask = features['mask']
      if self.mask_is_image:
        mask = tf.io.decode_png(mask, channels=1)
      if mask.shape.rank == 3:
        mask = mask[..., 0]
      mask = tf.cast(mask, tf.int32)
    elif self.kind == 'imagenet' and self.train:
      image = imagenet.train_decode_crop(image_bytes, seed,
                                         image_size=self.cfg.image_size)
    elif self.kind == 'imagenet':
      image = tf.cast(imagenet.decode_image(image_bytes), tf.float32)
    else:  # 'resize'
      size = self.cfg.image_size
      image = tf.image.resize(imagenet.decode_image(image_bytes), [size, size])
    with tf.control_dependencies(self._checks(features, mask)):
      out = {'image': tf.identity(image), 'index': index, 'seed': seed,
             'bad': tf.constant(False)}
    out['label'] = (tf.cast(features['label'], tf.int32) if self.has_label
                    else tf.zeros([], tf.int32))
    if mask is not None:
      out['mask'] = mask
    return out

  # --- stage 2: cannot fail on decoded data ---------------------------------------

  def finish(self, example):
    """-> dict(image normalised [S,S,3], label, [mask], index, bad, valid)."""
    cfg, seed, size = self.cfg, example['seed'], self.cfg.image_size
    image, out = example['image'], {}
    if self.task == 'segmentation':
      feats = {'image': image, 'mask': example['mask']}
      if self.train:
        res = self.seg.train_preprocess(
            feats, crop_size=size, scale_range=tuple(cfg.scale_range),
            ignore_label=self.ignore_label, seed=seed,
            image_pad_value=self.pad_value, flip=bool(_field(cfg, 'flip', True)))
      else:
        res = self.seg.eval_preprocess(feats, crop_size=size,
                                       ignore_label=self.ignore_label,
                                       image_pad_value=self.pad_value)
      image, mask = res['image'], tf.cast(res['mask'], tf.int32)
      out['mask'] = tf.where(example['bad'], self.ignore_label, mask)
    elif self.device_augment:  # crop/resize done in `decode`; the rest on the device
      image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
      image = tf.where(example['bad'], tf.zeros_like(image), image)
      image.set_shape([size, size, 3])
      out.update(image=image, label=example['label'], index=example['index'],
                 bad=example['bad'], valid=tf.where(example['bad'], 0.0, 1.0))
      return out
    elif self.kind == 'imagenet' and self.train:
      image = imagenet.train_flip_augment(image, seed, augment=cfg.augment,
                                          **self.aug)
    elif self.kind == 'imagenet':
      image = imagenet.resize_short_and_center_crop(image, cfg.eval_resize, size)
    elif self.train:  # 'resize'
      image = augment_lib.apply(cfg.augment, image, seed, **self.aug)
    image = (tf.cast(image, tf.float32) - self.mean) / self.std
    image = tf.where(example['bad'], 0.0, image)
    image.set_shape([size, size, 3])
    out.update(image=image, label=example['label'], index=example['index'],
               bad=example['bad'],
               valid=tf.where(example['bad'], 0.0, 1.0))
    return out

  def process(self, epoch, index, features, base_seed):
    """Both stages (what the pipeline runs per example); raises on bad data."""
    return self.finish(self.decode(epoch, index, features, base_seed))

  def blank_row(self) -> dict:
    """A row that carries no example (valid=0): eval padding and skipped bad examples.

    Zero image, label 0, an all-ignore mask; the same structure as `process`'s output.
    """
    size = self.cfg.image_size
    out = {'image': np.zeros([size, size, 3], np.uint8 if self.device_augment
                             else np.float32),
           'label': np.zeros([], np.int32), 'valid': np.zeros([], np.float32)}
    if self.task == 'segmentation':
      out['mask'] = np.full([size, size], self.ignore_label, np.int32)
    return out
