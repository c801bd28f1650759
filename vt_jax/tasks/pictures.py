"""Eval pictures of segmentation: image | ground truth | prediction rows, palette + legend."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

IGNORE_COLOR = (255, 255, 255)  # unlabelled / padding pixels in the ground truth


def palette(num_classes: int) -> np.ndarray:
  """uint8 [K, 3]: PASCAL VOC's colour map (bits of the class id spread over R, G, B).

  The segmentation community's standard palette: distinct, deterministic for any K, class 0
  (background in VOC, LIP and digit_scenes) black.
  """
  colors = np.zeros((num_classes, 3), np.uint8)
  for k in range(num_classes):
    c, r, g, b = k, 0, 0, 0
    for j in range(8):
      r |= ((c >> 0) & 1) << (7 - j)
      g |= ((c >> 1) & 1) << (7 - j)
      b |= ((c >> 2) & 1) << (7 - j)
      c >>= 3
    colors[k] = (r, g, b)
  return colors


def class_names(dataset: str, num_classes: int) -> list[str]:
  """Legend names of the mask classes 0..num_classes-1 of the tfds dataset `dataset`.

  digit_scenes: 'background', 'digit 0' ... 'digit 9' (mask value c + 1 = digit c); LIP: the
  builder's CLASS_NAMES; datasets whose builder carries no names (COCO-Stuff) get
  'class <k>'.
  """
  base = dataset.split("/")[0]
  if base == "digit_scenes":
    names = ["background"] + [f"digit {c}" for c in range(num_classes - 1)]
  elif base == "lip":
    from vt_jax.data.datasets import lip  # pylint: disable=g-import-not-at-top
    names = [n.replace("_", " ") for n in lip.CLASS_NAMES]
  else:
    names = [f"class {k}" for k in range(num_classes)]
  if len(names) != num_classes:
    raise ValueError(f"{dataset!r} names {len(names)} mask classes, the model predicts "
                     f"{num_classes}: check config.model.num_classes")
  return names


def colorize(labels: np.ndarray, num_classes: int, ignore_label: int | None) -> np.ndarray:
  """int [H, W] -> uint8 [H, W, 3]; ignore_label (and anything out of range) white."""
  colors = palette(num_classes)
  ok = (labels >= 0) & (labels < num_classes)
  out = colors[np.where(ok, labels, 0)]
  out[~ok] = IGNORE_COLOR
  return out


def legend_entries(shown, num_classes: int, names: list[str] | None) -> list[tuple[int, str]]:
  """(class id, legend label) of the shown classes that are real classes, in id order."""
  return [(int(k), names[k] if names is not None else str(int(k)))
          for k in sorted(shown) if 0 <= k < num_classes]


def save_segmentation_grid(path: str, images: np.ndarray, masks: np.ndarray,
                           predictions: np.ndarray, num_classes: int,
                           ignore_label: int | None, names: list[str] | None = None) -> None:
  """Writes a PNG: one row per example (image | ground truth | prediction), a legend below.

  images: float [N, H, W, 3] in 0..255; masks, predictions: int [N, H, W].
  The legend lists the classes that appear in the shown masks or predictions, by `names`
  (`class_names`; None: the class ids).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib.patches import Patch  # pylint: disable=g-import-not-at-top

  n = len(images)
  fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n + 0.9), squeeze=False)
  for i in range(n):
    row = (np.clip(images[i], 0, 255).astype(np.uint8),
           colorize(masks[i], num_classes, ignore_label),
           colorize(predictions[i], num_classes, ignore_label))
    for j, (ax, picture) in enumerate(zip(axes[i], row)):
      ax.imshow(picture, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(("image", "ground truth", "prediction")[j])
  shown = np.union1d(np.unique(masks), np.unique(predictions))
  colors = palette(num_classes)
  handles = [Patch(facecolor=colors[k] / 255, edgecolor="gray", label=label)
             for k, label in legend_entries(shown, num_classes, names)]
  if np.any(masks == ignore_label):
    handles.append(Patch(facecolor=np.array(IGNORE_COLOR) / 255, edgecolor="gray",
                         label="ignored"))
  fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), title="class",
             fontsize="small", frameon=False)
  fig.tight_layout(rect=(0, 0.9 / (2.5 * n + 0.9) + 0.02, 1, 1))
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, "wb") as f:  # gfile: local paths and gs://
    fig.savefig(f, format="png", dpi=80)
  plt.close(fig)
