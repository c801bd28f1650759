r"""Quickstart: a small VT-ResNet-18 on the bundled `digits` (8x8 scans upsampled to 32 px).

  python -m vt_jax.main --config=configs/quickstart.py --workdir=/tmp/qs
  python -m vt_jax.main --config=configs/quickstart.py --workdir=/tmp/qs --mode=eval

Needs no download. On a CPU it trains and evaluates to >= 97% test top-1 (measured
figures and wall clocks: README.md's Quickstart and docs/performance.md). The recipe is the
paper's default (SGD momentum 0.9, staircase decay, wd 4e-5) shortened to a few epochs; the
model is VT-ResNet-18 with 1/8 of the paper's widths so a CPU can train it.
  configs/quickstart.py:epochs=2   a shorter run (ARG fields below)
"""

from vt_jax.config_lib import args as args_lib
from vt_jax.config_lib import data
from vt_jax.config_lib import models
from vt_jax.config_lib import recipes


def get_config(arg=None):
  arg = args_lib.parse_arg(arg, epochs=20.0, width=8, size=32)
  config = recipes.default(
      batch_size=64,
      eval_batch_size=120,
      num_epochs=arg.epochs,        # 1437 train images / 64 = 22 steps per epoch
      log_every_steps=22,           # about once per epoch
      eval_every_epochs=4.0,
  )
  config.schedule.update(
      peak_lr=0.2,                  # per 256 images -> 0.05 at batch 64
      warmup_epochs=1.0,            # from init_lr: a short warm-up steadies the first steps
      init_lr=0.02,
      decay_every_epochs=arg.epochs / 3,  # x0.1 twice in the run (90 epochs / 30 in the paper)
  )
  # The small-width VT's first steps can spike (loss ~10 at init); clipping keeps them finite.
  config.optimizer.grad_clip_norm = 1.0
  config.checkpoint.every_steps = 1000   # eval steps and the end save anyway
  config.model = models.vt_resnet(
      18, num_classes=10, width=arg.width, small_image_stem=True,
      vt=dict(tokens=8, token_channels=64, ffn_hidden=64, heads=4, projector_heads=4,
              tokenizer_heads=4))
  config.data = data.digits(image_size=arg.size)
  return config
