"""`config.data` sections, one function per dataset (fields read by vt_jax.data).

    config.data = config_lib.data.imagenet(augment='randaugment')

Every function returns a ConfigDict with the common fields
  name, data_dir, train_split, eval_split, task, num_classes, image_size,
  skip_bad_examples, augment, augment_device, mean, std
plus its own preprocessing fields; keyword overrides replace any field, and an
unknown keyword raises (a typo never passes silently).
"""

from __future__ import annotations

import ml_collections

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # RGB, 0..255 units
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def _make(fields: dict, overrides: dict) -> ml_collections.ConfigDict:
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ValueError(f'unknown config.data field(s) {unknown}; known: '
                     f'{sorted(fields)}')
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def _common(**kw) -> dict:
  fields = dict(
      # tfds data_dir; None -> tfds default ($TFDS_DATA_DIR or ~/tensorflow_datasets). A typed
      # placeholder, so that --config.data.data_dir=DIR can override the None.
      data_dir=ml_collections.config_dict.placeholder(str),
      skip_bad_examples=False,  # True: bad examples become valid=0 rows, counted
      augment='none',           # 'none' | 'autoaugment' | 'randaugment' (train only)
      # True: the host only decodes, crops and resizes (classification train batches:
      # uint8 'image' + 'epoch' and 'index'); flips, colour ops and `augment`'s policy run
      # in the train step on the accelerator. False: all of it on the host (float32 batches).
      augment_device=False,
      randaugment_layers=2,     # ops per image (RandAugment N)
      randaugment_magnitude=9.0,  # RandAugment M on the 0..10 level scale
      mean=IMAGENET_MEAN,       # per-channel, 0..255 units, subtracted
      std=IMAGENET_STD,         # per-channel, 0..255 units, divided by
      ignore_label=None,        # mask value the loss/metric ignore (segmentation)
  )
  fields.update(kw)
  return fields


def imagenet(**overrides) -> ml_collections.ConfigDict:
  """ImageNet-1k from tfds 'imagenet2012' (manual download, see vt_jax.data)."""
  return _make(_common(
      name='imagenet2012', task='classification', num_classes=1000,
      train_split='train', eval_split='validation',
      preprocess='imagenet',    # Inception crop + flip (train), resize+centre crop (eval)
      image_size=224,           # px, side of the square fed to the model
      eval_resize=256,          # px, shorter side before the eval centre crop
  ), overrides)


def digits(**overrides) -> ml_collections.ConfigDict:
  """scikit-learn's 8x8 handwritten digits (bundled, offline), 10 classes."""
  return _make(_common(
      name='digits', task='classification', num_classes=10,
      train_split='train', eval_split='test',
      preprocess='resize',      # resize to image_size, no crop/flip (digits are not symmetric)
      image_size=32,            # px; 8x8 sources upsampled (model needs >= 32)
      mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5),
  ), overrides)


def digit_scenes(canvas: int = 64, task: str = 'segmentation',
                 **overrides) -> ml_collections.ConfigDict:
  """Canvases of real digits (bundled): segmentation (11 classes) or label."""
  if task not in ('segmentation', 'classification'):
    raise ValueError(f"digit_scenes task={task!r}: 'segmentation' or 'classification'")
  seg = task == 'segmentation'
  return _make(_common(
      name=f'digit_scenes/{canvas}', task=task,
      num_classes=11 if seg else 10,  # segmentation: background + 10 digits
      train_split='train', eval_split='test',
      preprocess='resize',      # classification: resize to image_size, no crop
      image_size=canvas,        # px
      scale_range=(0.75, 1.5),  # segmentation train: random rescale factors
      flip=False,               # segmentation train: no mirroring (a mirrored digit is none)
      ignore_label=255 if seg else None,
      mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5),
  ), overrides)


def coco_stuff(**overrides) -> ml_collections.ConfigDict:
  """COCO-stuff semantic segmentation (local official files, see builder)."""
  return _make(_common(
      name='coco_stuff', task='segmentation',
      num_classes=171,          # used stuff+thing classes, remapped to 0..170 by the builder
      train_split='train', eval_split='validation',
      image_size=512,           # px, square train crop / eval pad size
      scale_range=(0.5, 2.0),   # train random rescale factors
      flip=True,                # train: random horizontal flip of image and mask
      ignore_label=255,
  ), overrides)


def lip(**overrides) -> ml_collections.ConfigDict:
  """LIP human parsing, 20 classes (local official files, see builder)."""
  return _make(_common(
      name='lip', task='segmentation', num_classes=20,
      train_split='train', eval_split='validation',
      image_size=473,           # px, the LIP literature's crop size
      scale_range=(0.5, 2.0),
      # LIP's classes include left/right-arm/leg/shoe: a mirror would have to swap those
      # labels too, which this flip does not; off until it does.
      flip=False,
      ignore_label=255,
  ), overrides)
