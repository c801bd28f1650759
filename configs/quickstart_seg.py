r"""Segmentation quickstart: FPN or VT-FPN (small widths) on the bundled `digit_scenes` masks.

  python -m vt_jax.main --config=configs/quickstart_seg.py --workdir=/tmp/qs_fpn
  python -m vt_jax.main --config=configs/quickstart_seg.py:model=vt_fpn --workdir=/tmp/qs_vtfpn

Needs no download (the scenes are built from scikit-learn's digits on first use). 64x64
canvases with 1-3 digits; 11 classes (background + 10 digits); metrics: miou, pixel_acc and
per-class IoU in DIR/metrics.jsonl, pictures in DIR/pictures/eval_<step>.png. Measured
figures (mIoU, minutes on 2 CPU cores, FPN MACs): docs/segmentation.md. ARG fields:
  model=fpn|vt_fpn   epochs=E   width=W (backbone base channels)
The recipe is the segmentation one (SGD momentum 0.9, x0.1 at 2/3 and 8/9 of the run)
shortened to a few epochs; augmentation is random rescale + crop, never a mirror (a mirrored
digit is no digit: config.data.flip=False). The ResNet-18 backbone uses the small-image stem
(levels at strides 1, 2, 4, 8), the FPN and the head 16 channels; VT-FPN 8 tokens of 64
channels per level.
"""

from vt_jax.config_lib import args as args_lib
from vt_jax.config_lib import data
from vt_jax.config_lib import models
from vt_jax.config_lib import recipes


def get_config(arg=None):
  arg = args_lib.parse_arg(arg, model="fpn", epochs=10.0, width=8)
  if arg.model not in ("fpn", "vt_fpn"):
    raise ValueError(f"configs/quickstart_seg.py: model={arg.model!r}; choose fpn or vt_fpn")
  config = recipes.segmentation(
      batch_size=32,
      eval_batch_size=128,          # 500 test scenes: 4 batches, the last padded (valid=0)
      num_epochs=arg.epochs,        # 2000 train scenes / 32 = 62 steps per epoch
      log_every_steps=62,           # once per epoch
      eval_every_epochs=arg.epochs / 2,
  )
  config.schedule.update(lr_batch_ref=32, peak_lr=0.1, init_lr=0.01, warmup_epochs=0.5)
  config.optimizer.grad_clip_norm = 1.0
  config.checkpoint.every_steps = 1000
  # Small-image stem: the finest level is the 64x64 input, so the head's convs run at full
  # resolution (digit strokes are 1-3 px); 16 channels keep that affordable on a CPU.
  small = dict(width=arg.width, small_image_stem=True, fpn_channels=16, head_channels=16,
               head_norm_groups=4)
  if arg.model == "fpn":
    config.model = models.fpn(18, 11, **small)
  else:
    config.model = models.vt_fpn(18, 11, **small, vt=dict(
        tokens=8, token_channels=64, heads=4, projector_heads=4))
  config.data = data.digit_scenes(64, task="segmentation")
  return config
