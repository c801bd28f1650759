r"""VT-FPN with a ResNet-50 backbone on LIP (reference sections 2.2 and 4; Tables 9-10).

  python -m vt_jax.profile --config=configs/vt_fpn_r50_lip.py --resolution=473 --json
  python -m vt_jax.main --config=configs/vt_fpn_r50_lip.py --workdir=DIR \
      --config.init_from=resnet50.npz     # ImageNet backbone: python -m vt_jax.convert
  configs/vt_fpn_r50_lip.py:depth=101      # ResNet-101 (init_from a ResNet-101 then)

The paper starts every segmentation model from an ImageNet backbone: pass init_from (a
vt_jax.convert .npz or a vt_jax classification workdir); without it the backbone is random.
Recipe: vt_jax.config_lib.recipes.lip_fpn (its docstring gives the schedule and why).
"""

from vt_jax.config_lib import args as args_lib
from vt_jax.config_lib import data
from vt_jax.config_lib import models
from vt_jax.config_lib import recipes


def get_config(arg=None):
  arg = args_lib.parse_arg(arg, depth=50)
  config = recipes.lip_fpn()
  config.model = models.vt_fpn(arg.depth, num_classes=20)
  config.data = data.lip()
  return config
