"""Segmentation pictures: the legend names the classes."""

import numpy as np
import pytest

from vt_jax.tasks import pictures


def test_digit_scenes_and_lip_classes_have_names():
  names = pictures.class_names("digit_scenes/64", 11)
  assert names == ["background"] + [f"digit {c}" for c in range(10)]
  lip = pictures.class_names("lip", 20)
  assert lip[0] == "background" and lip[5] == "upper clothes" and len(set(lip)) == 20
  assert pictures.class_names("coco_stuff", 171)[170] == "class 170"
  with pytest.raises(ValueError, match="config.model.num_classes"):
    pictures.class_names("lip", 21)


def test_legend_lists_the_shown_classes_by_name(tmp_path):
  names = pictures.class_names("digit_scenes/32", 11)
  masks = np.zeros((2, 8, 8), np.int64)
  masks[0, 2:4, 2:4] = 4  # digit 3
  masks[1, 0, 0] = 255    # ignored
  preds = np.zeros((2, 8, 8), np.int64)
  preds[1, 5:, 5:] = 10   # digit 9
  shown = np.union1d(np.unique(masks), np.unique(preds))
  assert pictures.legend_entries(shown, 11, names) == [(0, "background"), (4, "digit 3"),
                                                       (10, "digit 9")]
  assert pictures.legend_entries(shown, 11, None) == [(0, "0"), (4, "4"), (10, "10")]
  path = str(tmp_path / "grid.png")
  pictures.save_segmentation_grid(path, np.zeros((2, 8, 8, 3)), masks, preds, 11, 255, names)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
