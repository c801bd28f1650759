"""vt_jax's tfds builders; importing this package registers all of them.

Bundled (data inside installed packages, built offline on first use):
  digits          scikit-learn's handwritten digits, 8x8, 10 classes.
  digit_scenes    canvases of those digits with per-pixel masks.
Manual (read the official files from tfds manual_dir):
  lip             Look Into Person human parsing, 20 classes.
  coco_stuff      COCO-Stuff 164k, 171 classes, 255 = unlabeled.
"""

from vt_jax.data.datasets import digits
from vt_jax.data.datasets import digit_scenes
