"""The paper's segmentation setups (Sec. 4.2; Tables 9-10).

One function serves the four files `configs/{fpn,vt_fpn}_r50_{cocostuff,lip}.py`, which differ
only in the model and the dataset:

    config = segmentation.paper_config("coco_stuff", "vt_fpn", arg)   # arg: 'depth=101' or None
"""

from __future__ import annotations

import ml_collections

from vt_jax.config_lib import args as args_lib
from vt_jax.config_lib import data
from vt_jax.config_lib import models
from vt_jax.config_lib import recipes

_MODELS = {"fpn": models.fpn, "vt_fpn": models.vt_fpn}


def paper_config(dataset: str, model: str, arg=None) -> ml_collections.ConfigDict:
  """Recipe, model and data of one Table 9-10 row; `arg` takes `depth=50|101`."""
  arg = args_lib.parse_arg(arg, depth=50)
  if model not in _MODELS:
    raise ValueError(f"model={model!r}; choose one of {sorted(_MODELS)}")
  if dataset == "coco_stuff":
    config = recipes.coco_stuff_fpn()
    num_classes = 171
    # 640 px: every COCO image (at most 640 a side) is evaluated unscaled, padded to 640x640.
    config.data = data.coco_stuff(image_size=640)
  elif dataset == "lip":
    config = recipes.lip_fpn()
    num_classes = 20
    config.data = data.lip()
  else:
    raise ValueError(f"dataset={dataset!r}; choose 'coco_stuff' or 'lip'")
  config.model = _MODELS[model](arg.depth, num_classes=num_classes)
  return config
