"""VT-ResNet-34 (the paper's Sec. 4.1) on ImageNet.

  python -m vt_jax.profile --config=configs/vt_r34.py
  python -m vt_jax.profile --config=configs/vt_r34.py:v1          # first arXiv version
  python -m vt_jax.profile --config=configs/vt_r34.py:tokens=32   # any L
  python -m vt_jax.main --config=configs/vt_r34.py --workdir=/tmp/vt_r34
  python -m vt_jax.main --config=configs/vt_r34.py:recipe=advanced --workdir=DIR  # Table 8 recipe

Widths the paper leaves open: vt_jax/config_lib/presets.py (chosen to land on Table 8).
"""

import ml_collections

from vt_jax.config_lib import args as args_lib
from vt_jax.config_lib import data
from vt_jax.config_lib import models
from vt_jax.config_lib import recipes


def get_config(arg=None):
  arg = args_lib.parse_arg(arg, v1=False, tokens=0, recipe="default")
  config = ml_collections.ConfigDict()
  config.model = models.vt_resnet(34, "v1" if arg.v1 else "iccv")
  if arg.tokens:  # 0 keeps the preset's L
    config.model.vt.tokens = arg.tokens
  # Training recipe (Table 2, or Table 8's with recipe=advanced; lengths in epochs) and
  # ImageNet input.
  recipes.add_recipe(config, arg.recipe)
  config.data = data.imagenet(augment="autoaugment" if arg.recipe == "advanced" else "none")
  return config
