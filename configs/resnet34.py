"""ResNet-34 baseline (torchvision layout) on ImageNet.

  python -m vt_jax.profile --config=configs/resnet34.py
  python -m vt_jax.main --config=configs/resnet34.py --workdir=/tmp/resnet34
  python -m vt_jax.main --config=configs/resnet34.py:recipe=advanced --workdir=DIR  # Table 8 recipe
"""

import ml_collections

from vt_jax.config_lib import args as args_lib
from vt_jax.config_lib import data
from vt_jax.config_lib import models
from vt_jax.config_lib import recipes


def get_config(arg=None):
  arg = args_lib.parse_arg(arg, recipe="default")
  config = ml_collections.ConfigDict()
  config.model = models.resnet(34)
  # Training recipe (Table 2, or Table 8's with recipe=advanced; lengths in epochs) and
  # ImageNet input.
  recipes.add_recipe(config, arg.recipe)
  config.data = data.imagenet(augment="autoaugment" if arg.recipe == "advanced" else "none")
  return config
