r"""The paper's ablations (Tables 3-7) and the v1/iccv choice as config args of one file.

  python -m vt_jax.main --config=configs/ablations.py --workdir=DIR        # the baseline
  python -m vt_jax.main --config=configs/ablations.py:tokenizer=pooling,tokens=32 --workdir=DIR
  python -m vt_jax.main --config=configs/ablations.py:data=imagenet,depth=34,recurrent=false ...
  python -m vt_jax.sweep --config=configs/ablations.py \
      --grid='tokenizer=filter,pooling,clustering;seed=0,1,2' --root=DIR   # a grid of runs
  python -m vt_jax.profile --config=configs/ablations.py:interaction=none --resolution=64

Args (defaults first; each changes one thing of the VT-ResNet baseline):
  model=vt|resnet                  resnet: the plain ResNet of the same depth, width and data
  tokenizer=filter|pooling|clustering   Table 3 (first module's tokenizer)
  recurrent=true|false             Table 4 (later modules' tokenizer)
  recurrent_logits=(preset)|paper|scaled|normalized|layernorm   the recurrent tokenizer's
                                   logits (model.vt.recurrent_logits); paper: Eq. 2 literally
  interaction=transformer|graphconv|none   Table 5
  tokens=0                         Table 6: L; 0 = the variant's preset (16 for R18/R34)
  projector=true|false             Table 7
  position_encoding=(preset)|true|false   v1's encoding; default: on for v1, off for iccv
  resize=bilinear|antialiased      pooling tokenizer / position encoding interpolation
  variant=iccv|v1                  the published equations or the first arXiv version
  depth=18|34|50|101
  data=digit_scenes|imagenet       the bundled small-scale data (default) or the real thing
  seed=0                           config.seed: init, dropout, data order
  width=0, epochs=0, canvas=64, clutter=false   digit_scenes only (0 = the default below)

With data=digit_scenes (a CPU-sized study: 2000 train / 500 test 64x64 scenes, label = the
largest digit's class) the networks are the paper's at 1/8 width (base width 8: C = 32 at
stage 4, C_T = 64, 4 heads) with the 3x3 stride-1 stem, so at 64 px the VT modules work on
stage 4's 16x16 map (ResNet's stage 5: 8x8), and the default recipe shortened to `epochs`
(default 12; the study in docs/analysis.md: 15). With data=imagenet they are the paper's VT-ResNets
(vt_jax/config_lib/presets.py) with the Table 2 recipe (or `recipe=advanced`).
"""

from vt_jax.config_lib import args as args_lib
from vt_jax.config_lib import data as data_lib
from vt_jax.config_lib import models
from vt_jax.config_lib import recipes

_CHOICES = dict(model=("vt", "resnet"), tokenizer=("filter", "pooling", "clustering"),
                interaction=("transformer", "graphconv", "none"), variant=("iccv", "v1"),
                resize=("bilinear", "antialiased"), data=("digit_scenes", "imagenet"),
                recipe=("default", "advanced"), position_encoding=(None, "true", "false"),
                recurrent_logits=(None, "paper", "scaled", "normalized", "layernorm"))
_SMALL_EPOCHS = 12.0
_SMALL_WIDTH = 8


def _check(arg) -> None:
  for key, allowed in _CHOICES.items():
    if arg[key] not in allowed:
      raise ValueError(f"configs/ablations.py: {key}={arg[key]!r}; choose one of "
                       f"{[a for a in allowed if a is not None]}")
  if arg.depth not in (18, 34, 50, 101):
    raise ValueError(f"configs/ablations.py: depth={arg.depth}; choose 18, 34, 50 or 101")
  if arg.data == "imagenet" and (arg.width or arg.epochs or arg.clutter or arg.canvas != 64):
    raise ValueError("configs/ablations.py: width/epochs/canvas/clutter are digit_scenes "
                     "args; with data=imagenet use --config.num_epochs / model.width")


def _vt_fields(arg) -> dict:
  vt = dict(tokenizer=arg.tokenizer, recurrent=arg.recurrent, interaction=arg.interaction,
            projector=arg.projector, resize=arg.resize)
  if arg.tokens:
    vt["tokens"] = arg.tokens
  if arg.position_encoding is not None:
    vt["position_encoding"] = arg.position_encoding == "true"
  if arg.recurrent_logits is not None:
    vt["recurrent_logits"] = arg.recurrent_logits
  return vt


def get_config(arg=None):
  arg = args_lib.parse_arg(
      arg, model="vt", tokenizer="filter", recurrent=True, interaction="transformer",
      tokens=0, projector=True, position_encoding=None, resize="bilinear", variant="iccv",
      depth=18, data="digit_scenes", seed=0, width=0, epochs=0.0, canvas=64, clutter=False,
      recipe="default", recurrent_logits=None)
  _check(arg)
  if arg.data == "imagenet":
    config = recipes.RECIPES[arg.recipe]()
    if arg.model == "resnet":
      config.model = models.resnet(arg.depth)
    else:
      config.model = models.vt_resnet(arg.depth, arg.variant, vt=_vt_fields(arg))
    if arg.recipe == "advanced":
      recipes.apply_advanced_model(config.model)
    config.data = data_lib.imagenet(augment="autoaugment" if arg.recipe == "advanced"
                                    else "none")
  else:
    epochs = arg.epochs or _SMALL_EPOCHS
    width = arg.width or _SMALL_WIDTH
    config = recipes.RECIPES[arg.recipe](
        batch_size=64, eval_batch_size=100, num_epochs=epochs,
        log_every_steps=31,           # 2000 train scenes / 64 = 31 steps per epoch
        eval_every_epochs=epochs)     # one evaluation, at the end
    if arg.recipe == "default":
      # configs/digit_scenes.py's lr, with the warm-up and the two x0.1 steps placed for
      # short runs: full lr until 45% of the run, x0.1 until 85%, then x0.01.
      config.schedule.update(peak_lr=0.2, warmup_epochs=0.05 * epochs, init_lr=0.02,
                             decay_every_epochs=0.4 * epochs)
    # The small-width VT's first steps can spike; clipping keeps them finite.
    config.optimizer.grad_clip_norm = 1.0
    config.checkpoint.update(keep=1, keep_best=0)  # small runs: the end state is enough
    common = dict(num_classes=10, width=width, small_image_stem=True)
    if arg.model == "resnet":
      config.model = models.resnet(arg.depth, **common)
    else:
      c_t = 8 * width  # 64 at width 8 (the paper: 1024 at width 64, i.e. 16x; kept small)
      vt = dict(tokens=16, token_channels=c_t, ffn_hidden=c_t, qk_channels=None, heads=4,
                projector_heads=4, tokenizer_heads=4)
      vt.update(_vt_fields(arg))
      config.model = models.vt_resnet(arg.depth, arg.variant, vt=vt, **common)
    if arg.recipe == "advanced":
      recipes.apply_advanced_model(config.model)
    config.data = data_lib.digit_scenes(arg.canvas, task="classification")
    if arg.clutter:
      config.data.name += "_clutter"
  config.seed = arg.seed
  return config
