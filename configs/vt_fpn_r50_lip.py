r"""VT-FPN with a ResNet-50 backbone on LIP (the paper's Sec. 4.2; Tables 9-10).

  python -m vt_jax.profile --config=configs/vt_fpn_r50_lip.py --resolution=473 --json
  python -m vt_jax.main --config=configs/vt_fpn_r50_lip.py --workdir=DIR \
      --config.init_from=resnet50.npz     # ImageNet backbone: python -m vt_jax.convert
  configs/vt_fpn_r50_lip.py:depth=101      # ResNet-101 (init_from a ResNet-101 then)

The paper starts every segmentation model from an ImageNet backbone: pass init_from (a
vt_jax.convert .npz or a vt_jax classification workdir); without it the backbone is random.
Recipe: vt_jax.config_lib.recipes.lip_fpn (its docstring gives the schedule and why).
"""

from vt_jax.config_lib import segmentation


def get_config(arg=None):
  return segmentation.paper_config("lip", "vt_fpn", arg)
