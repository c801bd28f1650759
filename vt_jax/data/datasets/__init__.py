"""vt_jax's tfds builders; importing this package registers all of them.

Bundled (data inside installed packages, built offline on first use):
  digits          scikit-learn's handwritten digits, 8x8, 10 classes.
  digit_scenes    canvases of those digits with per-pixel masks.
Manual (read the official files from tfds manual_dir):
  lip             Look Into Person human parsing, 20 classes.
  coco_stuff      COCO-Stuff 164k, 171 classes, 255 = unlabeled.
"""

from vt_jax.data.datasets import coco_stuff
from vt_jax.data.datasets import digit_scenes
from vt_jax.data.datasets import digits
from vt_jax.data.datasets import lip

import dataclasses


@dataclasses.dataclass(frozen=True)
class SegmentationMeta:
  """What a segmentation dataset's 'mask' holds."""
  num_classes: int  # Mask classes 0..num_classes-1 (background included where it exists).
  ignore_label: int  # Unlabelled / padded pixels; losses and metrics skip them.


# tfds name (without builder config) -> mask metadata, for the pipeline's DatasetInfo.
# digit_scenes has no unlabelled pixels; 255 is what preprocessing pads with.
SEGMENTATION = {
    'digit_scenes': SegmentationMeta(digit_scenes.NUM_MASK_CLASSES, 255),
    'lip': SegmentationMeta(lip.NUM_CLASSES, lip.IGNORE_LABEL),
    'coco_stuff': SegmentationMeta(coco_stuff.NUM_CLASSES, coco_stuff.IGNORE_LABEL),
}
