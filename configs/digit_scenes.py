r"""VT-ResNet-18 (quickstart widths) on the bundled `digit_scenes`: small, off-centre objects.

  python -m vt_jax.main --config=configs/digit_scenes.py --workdir=/tmp/ds
  python -m vt_jax.data --config=configs/digit_scenes.py --save=/tmp/peek             # the data
  python -m vt_jax.data --config=configs/digit_scenes.py:task=segmentation --save=/tmp/peek

Classification of the largest digit on a 64x64 canvas holding 1-3 real digits (built offline on
first use). `task=segmentation` gives the per-pixel masks (background + 10 digits) for the data
tool; a classifier refuses it (configs/quickstart_seg.py trains segmentation models on it).
"""

from vt_jax.config_lib import args as args_lib
from vt_jax.config_lib import data
from vt_jax.config_lib import models
from vt_jax.config_lib import recipes


def get_config(arg=None):
  arg = args_lib.parse_arg(arg, epochs=20.0, canvas=64, task="classification", clutter=False)
  config = recipes.default(
      batch_size=64,
      eval_batch_size=100,
      num_epochs=arg.epochs,        # 2000 train scenes / 64 = 31 steps per epoch
      log_every_steps=31,
      eval_every_epochs=5.0,
  )
  config.schedule.update(peak_lr=0.2, warmup_epochs=1.0, init_lr=0.02,
                         decay_every_epochs=arg.epochs / 3)
  config.optimizer.grad_clip_norm = 1.0
  config.model = models.vt_resnet(
      18, num_classes=10, width=8, small_image_stem=True,
      vt=dict(tokens=8, token_channels=64, ffn_hidden=64, heads=4, projector_heads=4,
              tokenizer_heads=4))
  config.data = data.digit_scenes(arg.canvas, task=arg.task)
  if arg.clutter:
    config.data.name += "_clutter"
  return config
