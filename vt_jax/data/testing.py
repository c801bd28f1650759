"""A generated tfds dataset for tests and benchmarks (offline, deterministic).

Importing this module registers the tfds builder `vt_jax_synthetic` with configs
  'clean'  48 train / 21 test JPEG images (24..40 px), labels 0..9
  'bad'    like 'clean' with train example 5 undecodable bytes and train
           example 11 labelled 10 (out of range for 10 classes)
  'seg'    40 train / 10 test images + masks and labels in 0..4 (5 classes); train example
           3 has mask value 7 (unknown class)
  'bench'  512 train / 64 test JPEGs of ImageNet-like size (~ 400x350 px)
Labels are stored as plain int64 (not ClassLabel) so that bad labels can be
written; set config.data.num_classes. Not imported by vt_jax.data itself.
"""

from __future__ import annotations

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

NAME = 'vt_jax_synthetic'


def _jpeg(rng: np.random.Generator, h: int, w: int) -> bytes:
  # Smooth gradients + noise: compresses like a photo, not like white noise.
  yy, xx = np.mgrid[0:h, 0:w]
  base = np.stack([(xx * rng.uniform(0.2, 2)) % 256, (yy * rng.uniform(0.2, 2)) % 256,
                   ((xx + yy) * rng.uniform(0.1, 1)) % 256], -1)
  image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='JPEG', quality=90)
  return buf.getvalue()


def _png(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format='PNG')
  return buf.getvalue()


class VtJaxSynthetic(tfds.core.GeneratorBasedBuilder):
  """Generated images (see module docstring)."""

  VERSION = tfds.core.Version('1.0.0')

  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n)
                     for n in ('clean', 'bad', 'seg', 'bench')]

  def _info(self):
    features = {'image': tfds.features.Image(shape=(None, None, 3),
                                             encoding_format='jpeg'),
                'label': tfds.features.Scalar(np.int64)}
    if self.builder_config.name == 'seg':
      features['image'] = tfds.features.Image(shape=(None, None, 3),
                                              encoding_format='png')
      features['mask'] = tfds.features.Image(shape=(None, None, 1),
                                             encoding_format='png')
    # disable_shuffling: stored order = generation order, so the test data's
    # example index i is the i-th generated example.
    return tfds.core.DatasetInfo(builder=self,
                                 features=tfds.features.FeaturesDict(features),
                                 disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    sizes = {'clean': (48, 21), 'bad': (48, 21), 'seg': (40, 10),
             'bench': (512, 64)}[self.builder_config.name]
    return {'train': self._generate_examples('train', sizes[0]),
            'test': self._generate_examples('test', sizes[1])}

  def _generate_examples(self, split, n):
    config = self.builder_config.name
    rng = np.random.default_rng(0 if split == 'train' else 1)
    for i in range(n):
      if config == 'bench':
        h, w = int(rng.integers(300, 500)), int(rng.integers(300, 500))
      else:
        h, w = int(rng.integers(24, 41)), int(rng.integers(24, 41))
      label = int(rng.integers(0, 10))
      example = {'label': label}
      if config == 'seg':
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = rng.integers(0, 5, (h, w, 1), dtype=np.uint8)
        if split == 'train' and i == 3:
          mask[0, 0, 0] = 7
        example.update(image=io.BytesIO(_png(image)), mask=io.BytesIO(_png(mask[..., 0])),
                       label=label % 5)
      else:
        data = _jpeg(rng, h, w)
        if config == 'bad' and split == 'train' and i == 5:
          data = b'\xff\xd8\xff\xe0 this is not a JPEG'
        if config == 'bad' and split == 'train' and i == 11:
          example['label'] = 10
        example['image'] = io.BytesIO(data)
      yield i, example
