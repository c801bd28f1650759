"""Shared reading and checking of manually downloaded segmentation datasets.

Every file is decoded while the tfds dataset is built, so a corrupt image or a
mask with an unknown class fails the build with the dataset, split and file
named, instead of surfacing as a wrong label during training.
"""

from __future__ import annotations

import abc
import io
import os
import sys
from typing import Iterable, Iterator

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from vt_jax.data import BadExampleError

IGNORE_LABEL = 255  # Mask value of unlabelled pixels in every segmentation builder.


def check_manual_files(dataset: str, manual_dir: os.PathLike, required: Iterable[str],
                       instructions: str) -> None:
  """Raises FileNotFoundError listing every missing path under manual_dir."""
  missing = [p for p in required if not os.path.exists(os.path.join(manual_dir, p))]
  if missing:
    raise FileNotFoundError(
        f"{dataset}: the manual directory {os.fspath(manual_dir)!r} lacks "
        f"{', '.join(missing)}.\n{instructions}")


def read_image(dataset: str, split: str,
               path: str) -> tuple[bytes | np.ndarray, tuple[int, int]]:
  """Decodes one image fully; returns what tfds.features.Image should store.

  Returns (stored, (height, width)); stored is the file's own bytes when it is
  an RGB JPEG (kept as is, no re-encoding loss) and otherwise the decoded uint8
  [H, W, 3] RGB array (COCO has greyscale and CMYK JPEGs).

  Raises:
    BadExampleError: the file cannot be decoded.
  """
  with open(path, 'rb') as f:
    data = f.read()
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()  # Decodes all pixels: truncated files fail here.
      size = (image.height, image.width)
      if image.format == 'JPEG' and image.mode == 'RGB':
        return data, size
      return np.asarray(image.convert('RGB')), size
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise BadExampleError(
        f'{dataset}: split {split!r}: cannot decode image file {path!r} '
        f'({type(e).__name__}: {e}). Replace it with the official file.') from e


def read_mask(dataset: str, split: str, path: str, lookup: np.ndarray) -> np.ndarray:
  """Reads a single-channel label PNG and maps raw values through `lookup`.

  Args:
    dataset, split: for error messages.
    path: PNG whose pixel values (mode 'L' or 'P' indices) are raw class ids.
    lookup: int [256]; raw value -> stored class id, IGNORE_LABEL, or -1 for
      values that must not occur.

  Returns:
    uint8 [H, W] stored class ids (IGNORE_LABEL = unlabelled).

  Raises:
    BadExampleError: undecodable, not single-channel, or an unknown class id.
  """
  try:
    with Image.open(path) as image:
      image.load()
      if image.mode not in ('L', 'P'):
        raise BadExampleError(
            f'{dataset}: split {split!r}: mask {path!r} has PIL mode {image.mode!r}; '
            "expected a single-channel label PNG (mode 'L' or 'P').")
      raw = np.asarray(image)
  except (OSError, ValueError, SyntaxError) as e:
    if isinstance(e, BadExampleError):
      raise
    raise BadExampleError(
        f'{dataset}: split {split!r}: cannot decode mask file {path!r} '
        f'({type(e).__name__}: {e}).') from e
  mapped = lookup[raw]
  if (mapped < 0).any():
    bad = sorted(set(np.unique(raw[mapped < 0]).tolist()))
    raise BadExampleError(
        f'{dataset}: split {split!r}: mask {path!r} contains class ids {bad} '
        f'outside the dataset\'s classes (valid: {describe_valid(lookup)}).')
  return mapped.astype(np.uint8)


def describe_valid(lookup: np.ndarray) -> str:
  """Compact text of the raw values `lookup` accepts, e.g. '0..19, 255'."""
  values = np.flatnonzero(lookup >= 0).tolist()
  runs, start = [], values[0]
  for prev, cur in zip(values, values[1:] + [None]):
    if cur != prev + 1:
      runs.append(str(start) if start == prev else f'{start}..{prev}')
      start = cur
  return ', '.join(runs)


def check_same_size(dataset: str, split: str, image_path: str, mask_path: str,
                    image_size: tuple[int, int], mask: np.ndarray) -> None:
  if tuple(image_size) != mask.shape:
    raise BadExampleError(
        f'{dataset}: split {split!r}: image {image_path!r} is {image_size} '
        f'(height, width) but its mask {mask_path!r} is {mask.shape}.')


class SegmentationFilesBuilder(tfds.core.GeneratorBasedBuilder):
  """A builder that reads (image, mask) file pairs from the tfds manual directory.

  Subclasses name the files (`REQUIRED_PATHS`, `_pairs`), the class mapping
  (`_lookup`) and the docs; decoding and checking every pair is shared.
  """

  VERSION = tfds.core.Version('1.0.0')
  SPLITS: tuple[str, ...] = ('train', 'validation')
  REQUIRED_PATHS: tuple[str, ...] = ()  # relative to the manual dir; checked up front
  MASK_DOC = ''
  ID_DOC = ''
  HOMEPAGE = ''

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=sys.modules[type(self).__module__].__doc__,  # the builder module's doc
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
            'mask': tfds.features.Tensor(shape=(None, None), dtype=np.uint8, encoding='zlib',
                                         doc=self.MASK_DOC),
            'id': tfds.features.Text(doc=self.ID_DOC),
        }),
        homepage=self.HOMEPAGE,
    )

  def _split_generators(self, dl_manager):
    manual_dir = dl_manager.manual_dir
    check_manual_files(self.name, manual_dir, self.REQUIRED_PATHS,
                       self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return {split: self._generate_examples(manual_dir, split) for split in self.SPLITS}

  def _generate_examples(self, manual_dir, split):
    lookup = self._lookup()
    for key, image_path, mask_path in self._pairs(os.fspath(manual_dir), split):
      image, size = read_image(self.name, split, image_path)
      mask = read_mask(self.name, split, mask_path, lookup)
      check_same_size(self.name, split, image_path, mask_path, size, mask)
      yield key, {'image': image, 'mask': mask, 'id': key}

  @abc.abstractmethod
  def _lookup(self) -> np.ndarray:
    """int [256]: stored mask value -> class id, IGNORE_LABEL, or -1 (invalid)."""

  @abc.abstractmethod
  def _pairs(self, manual_dir: str, split: str) -> Iterator[tuple[str, str, str]]:
    """Yields (example id, image path, mask path); raises naming a missing file."""
