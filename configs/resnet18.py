"""ResNet-18 baseline (torchvision layout) on ImageNet.

  python -m vt_jax.profile --config=configs/resnet18.py
  python -m vt_jax.main --config=configs/resnet18.py --workdir=/tmp/resnet18
"""

import ml_collections

from vt_jax.config_lib import args as args_lib
from vt_jax.config_lib import models


def get_config(arg=None):
  arg = args_lib.parse_arg(arg)
  del arg  # no variants yet
  config = ml_collections.ConfigDict()
  config.model = models.resnet(18)
  return config
