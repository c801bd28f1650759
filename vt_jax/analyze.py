r"""What the tokens learn: attention pictures and figures of a trained VT model.

  python -m vt_jax.analyze --workdir=DIR [--split=test] [--num_images=8] [--out=DIR/analysis]
      [--step=N] [--ema=false]
  python -m vt_jax.analyze --init --config=FILE[:ARG] [--resolution=224] [--seeds=0,1]
      [--batch=2] [--out=DIR]

Loads the run (its config.json and newest checkpoint, EMA weights when it kept an EMA),
applies the model to the first `num_images` images of `split` (eval preprocessing) with
`mutable=['intermediates']`, and reads the attention maps the VT modules sowed:

  OUT/image<i>_<module>.png  per image and VT module: the image (foreground outlined where the
      data has masks), then one panel per token: its spatial attention over the image (the
      paper's Fig. 6 top row) and, below, the token-interaction view (the transformer's
      token-token weights mixing the maps; Fig. 6 bottom row). Each panel is scaled to its own
      maximum (colour = share of that maximum, transparent where low); the panel title gives
      the token index and, with masks, the share of its mass on the foreground.
  OUT/attention_stats.json  per module and token: attention entropy vs log(HW) (uniform
      attention) and, on data with masks (digit_scenes, LIP, COCO-Stuff), attention mass per
      foreground pixel / per background pixel; printed as a table too.

With --init it reads an untrained model instead: the config file's model, initialised with
each seed and applied in train mode (BatchNorm on the batch's statistics, as at the first
training step) to `batch` images of standard normal pixels at `resolution` (default: the
config's data.image_size). It prints each VT module's spatial-attention entropy against
log(HW) (uniform attention), its lowest token's and its largest single pixel weight, per
seed, and with --out writes them to OUT/init_entropy.json. A module far below log(HW) reads
a few pixels from the first step, where its softmax passes almost no gradient: a way to
check a variant of your own before training it.
"""

from __future__ import annotations

import json
import math
import os
import sys

from absl import app
from absl import flags
from absl import logging

_WORKDIR = None
_SPLIT = None
_NUM = None
_OUT = None
_STEP = None
_EMA = None
_INIT = None
_CONFIG = None
_RESOLUTION = None
_SEEDS = None
_BATCH = None


def define_flags() -> None:
  """absl flags of the command line; defined only when run as a program, so that the
  module imports beside others (tests, the training entry point) without flag clashes."""
  global _WORKDIR, _SPLIT, _NUM, _OUT, _STEP, _EMA  # pylint: disable=global-statement
  global _INIT, _CONFIG, _RESOLUTION, _SEEDS, _BATCH  # pylint: disable=global-statement
  _WORKDIR = flags.DEFINE_string("workdir", None, "A vt_jax training workdir (or its "
                                 "checkpoints/<step> directory).")
  _SPLIT = flags.DEFINE_string("split", None, "Split of the run's dataset: its train or eval "
                               "split's name (default: the eval split, e.g. 'test').")
  _NUM = flags.DEFINE_integer("num_images", 8, "Images to analyse (the split's first ones).")
  _OUT = flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/analysis).")
  _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
  _EMA = flags.DEFINE_bool("ema", True, "Use the EMA weights when the run kept an EMA.")
  _INIT = flags.DEFINE_bool("init", False, "Read the untrained model of --config instead of "
                            "a run: spatial-attention entropy per VT module at initialisation.")
  _CONFIG = flags.DEFINE_string("config", None, "With --init: a config file, FILE[:ARG] as "
                                "vt_jax.main takes it.")
  _RESOLUTION = flags.DEFINE_string("resolution", None, "With --init: input size, SIZE or "
                                    "HEIGHTxWIDTH (default: the config's data.image_size).")
  _SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "With --init: initialisation seeds.")
  _BATCH = flags.DEFINE_integer("batch", 2, "With --init: random images per seed.")


COLUMNS = 8  # token panels per row


def _data_config(data_cfg, split: str | None):
  """The run's data section reading `split` with eval preprocessing (no augmentation)."""
  cfg = data_cfg.copy_and_resolve_references()
  if split is not None:
    known = (data_cfg.train_split, data_cfg.eval_split)
    if split not in known:
      raise app.UsageError(f"--split={split!r}: {data_cfg.name!r} in this run reads the splits "
                           f"{list(known)}")
    cfg.eval_split = split
  return cfg


def load_images(data_cfg, split: str | None, num: int):
  """First `num` images of the split as the model sees them, with foreground masks when the
  dataset has them: (images [n,H,W,3], labels [n], fg [n,H,W] bool | None, valid | None,
  why_no_masks str)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vt_jax import attention  # pylint: disable=g-import-not-at-top
  from vt_jax import data  # pylint: disable=g-import-not-at-top
  cfg = _data_config(data_cfg, split)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))

  def first_batch(c):
    batch = jax.device_get(next(iter(data.make_iterator(c, "eval", num, mesh, seed=0))))
    keep = batch["valid"] > 0
    return {k: v[keep] for k, v in batch.items()}

  batch = first_batch(cfg)
  base = cfg.name.split("/")[0]
  if base not in attention.FOREGROUND:
    return batch["image"], batch["label"], None, None, f"{cfg.name!r} has no masks"
  from vt_jax.data.datasets import SEGMENTATION  # pylint: disable=g-import-not-at-top
  seg = cfg.copy_and_resolve_references()
  seg.update(task="segmentation", num_classes=SEGMENTATION[base].num_classes,
             ignore_label=SEGMENTATION[base].ignore_label)
  masks = first_batch(seg)
  if masks["image"].shape != batch["image"].shape or not np.allclose(
      masks["image"], batch["image"], atol=1e-4):
    return (batch["image"], batch["label"], None, None,
            f"{cfg.name!r}'s segmentation preprocessing does not give the classifier's "
            "images, so its masks do not align with them")
  mask = masks["mask"]
  valid = mask != seg.ignore_label if seg.ignore_label is not None else np.ones_like(mask, bool)
  return batch["image"], batch["label"], attention.FOREGROUND[base](mask) & valid, valid, ""


def _display(image, data_cfg):
  """Normalised image -> RGB in [0, 1] for display."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rgb = image * np.asarray(data_cfg.std) + np.asarray(data_cfg.mean)
  return np.clip(rgb / 255.0, 0.0, 1.0)


def _overlay(ax, gray, amap, shape):
  """Token map [h*w] over the grayscale image, scaled to its own maximum."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from matplotlib import cm  # pylint: disable=g-import-not-at-top
  hh, ww = gray.shape
  a = amap.reshape(shape)
  a = a / max(float(a.max()), 1e-12)
  up = np.kron(a, np.ones((hh // shape[0], ww // shape[1])))  # each pixel's cell, exactly
  rgba = cm.inferno(up)
  rgba[..., 3] = 0.85 * np.sqrt(up)  # transparent where the token does not look
  ax.imshow(gray, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  ax.imshow(rgba, interpolation="nearest")
  ax.set_xticks([])
  ax.set_yticks([])


def plot_module(path: str, rgb, fg, maps, index: int, title: str) -> None:
  """One PNG: the image, then each token's spatial and interaction maps for one module."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vt_jax import attention  # pylint: disable=g-import-not-at-top
  gray = rgb.mean(axis=-1)
  views = [("spatial attention A (where each token reads from)", maps.spatial[index],
            maps.token_ids)]
  if maps.interaction is not None:
    views.append(("token interaction W·A (after the transformer)", maps.interaction[index],
                  list(range(maps.interaction.shape[-1]))))
  rows = [math.ceil(len(ids) / COLUMNS) for _, _, ids in views]
  fig, axes = plt.subplots(sum(rows), COLUMNS + 1, squeeze=False,
                           figsize=(1.15 * (COLUMNS + 1), 1.3 * sum(rows) + 0.5))
  fg_frac = None
  if fg is not None:
    fg_frac, valid_frac = attention.foreground_fraction(fg[index][None], np.ones_like(
        fg[index][None]), maps.shape)
  row = 0
  for (label, amaps, ids), n_rows in zip(views, rows):
    for r in range(n_rows):
      ax = axes[row + r, 0]
      ax.axis("off")
      if r == 0:
        ax.imshow(rgb, interpolation="nearest")
        if fg is not None:
          ax.contour(fg[index], levels=[0.5], colors="cyan", linewidths=0.6)
        ax.set_title(label.split(" (")[0], fontsize=7)
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
    for j, token in enumerate(ids):
      ax = axes[row + j // COLUMNS, 1 + j % COLUMNS]
      _overlay(ax, gray, amaps[:, j], maps.shape)
      text = f"t{token}"
      if fg_frac is not None:
        text += f"  fg {100 * float(amaps[:, j] @ fg_frac[0]):.0f}%"
      ax.set_title(text, fontsize=7, pad=2)
    for j in range(len(ids), n_rows * COLUMNS):
      axes[row + j // COLUMNS, 1 + j % COLUMNS].axis("off")
    row += n_rows
  note = f"\n{maps.note}" if maps.note else ""
  fig.suptitle(f"{title} — {maps.name} ({maps.shape[0]}x{maps.shape[1]} map){note}",
               fontsize=8)
  fig.tight_layout(pad=0.3, h_pad=0.4, w_pad=0.2)
  fig.savefig(path, dpi=72)
  plt.close(fig)


def analyze(workdir: str, out: str | None = None, split: str | None = None,
            num_images: int = 8, step: int | None = None, ema: bool = True) -> dict:
  """Writes the pictures and attention_stats.json; returns the stats."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vt_jax import attention  # pylint: disable=g-import-not-at-top
  from vt_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  loaded = ckpt_lib.load_model(workdir, step, ema)
  config = loaded.config
  if config.model.name != "vt_resnet":
    raise app.UsageError(f"{workdir}: model.name={config.model.name!r} has no visual tokens; "
                         "analyze reads VT models (model.name='vt_resnet')")
  images, labels, fg, valid, why = load_images(config.data, split, num_images)
  logits, state = jax.jit(lambda v, x: loaded.model.apply(
      v, x, train=False, mutable=["intermediates"]))(loaded.variables, images)
  modules = attention.token_maps(state["intermediates"], images.shape[1:3],
                                 config.model.vt.tokens)
  stats = attention.summarise(modules, fg, valid)
  out = out or os.path.join(workdir, "analysis")
  os.makedirs(out, exist_ok=True)
  preds = np.asarray(logits).argmax(-1)
  name = os.path.basename(os.path.normpath(workdir))
  for i in range(len(images)):
    rgb = _display(np.asarray(images[i]), config.data)
    for m in modules:
      title = (f"{name}, step {loaded.step} ({loaded.weights} weights), image {i}: "
               f"label {labels[i]}, predicted {preds[i]}")
      plot_module(os.path.join(out, f"image{i}_{m.name.replace('/', '_')}.png"), rgb, fg, m,
                  i, title)
  result = dict(workdir=workdir, step=loaded.step, weights=loaded.weights,
                split=split or config.data.eval_split, num_images=int(len(images)),
                masks=fg is not None, no_masks_reason=why, modules=stats)
  with open(os.path.join(out, "attention_stats.json"), "w") as f:
    json.dump(result, f, indent=2)
  return result


def analyze_init(config_spec: str, resolution=None, seeds=(0, 1), batch: int = 2,
                 out: str | None = None) -> dict:
  """--init: entropy of every VT module of `config_spec`'s untrained model (see the module
  docstring); writes OUT/init_entropy.json when `out` is given."""
  from vt_jax import attention  # pylint: disable=g-import-not-at-top
  from vt_jax import profile  # pylint: disable=g-import-not-at-top
  from vt_jax.config_lib import files  # pylint: disable=g-import-not-at-top
  config = files.load(config_spec)
  if config.model.name not in ("vt_resnet", "vt_fpn"):
    raise app.UsageError(f"--config={config_spec}: model.name={config.model.name!r} has no "
                         "visual tokens; --init reads VT models (vt_resnet, vt_fpn)")
  if resolution is None:
    resolution = config.data.image_size
  try:
    hw = profile.parse_resolution(resolution)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if batch < 1:
    raise app.UsageError(f"--batch={batch}: need at least one image")
  modules = attention.init_entropy(config.model, hw, tuple(seeds), batch)
  result = dict(config=config_spec, resolution=list(hw), seeds=list(seeds), batch=batch,
                modules=modules)
  if out:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "init_entropy.json"), "w") as f:
      json.dump(result, f, indent=2)
  return result


def main_init() -> None:
  """--init: print the entropy table of an untrained model."""
  from vt_jax import attention  # pylint: disable=g-import-not-at-top
  if not _CONFIG.value:
    raise app.UsageError("--init needs --config=FILE[:ARG], the model to initialise")
  if _WORKDIR.value:
    raise app.UsageError("--init reads an untrained model from --config; drop --workdir "
                         "(without --init, --workdir names a trained run)")
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError as e:
    raise app.UsageError(f"--seeds={','.join(_SEEDS.value)}: give integers, e.g. 0,1") from e
  try:
    result = analyze_init(_CONFIG.value, _RESOLUTION.value, seeds, _BATCH.value, _OUT.value)
  except (FileNotFoundError, AttributeError, ValueError) as e:
    print(f"FATAL {e}", file=sys.stderr)
    sys.exit(1)
  h, w = result["resolution"]
  print(f"{_CONFIG.value}: untrained, {h}x{w} standard normal images, batch {_BATCH.value}, "
        f"train-mode BatchNorm, seeds {','.join(map(str, seeds))} (values per seed)")
  print(attention.format_init_table(result["modules"]))
  low = [name for name, e in result["modules"].items()
         if min(e["entropy"]) < 0.5 * e["uniform_entropy"]]
  if low:
    print(f"below half of log(HW) (attention on a few pixels from the first step): "
          f"{', '.join(low)}")
  if _OUT.value:
    print(f"wrote {_OUT.value}/init_entropy.json")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _INIT.value:
    main_init()
    return
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required (a trained run), or --init --config=FILE "
                         "for an untrained model")
  from vt_jax import runtime  # pylint: disable=g-import-not-at-top
  runtime.setup_tensorflow()  # the images come through tf.data: quiet, off the accelerators
  from vt_jax import attention  # pylint: disable=g-import-not-at-top
  from vt_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  try:
    result = analyze(_WORKDIR.value, _OUT.value, _SPLIT.value, _NUM.value, _STEP.value,
                     _EMA.value)
  except (FileNotFoundError, ckpt_lib.CheckpointError) as e:
    print(f"FATAL {e}", file=sys.stderr)
    sys.exit(1)
  out = _OUT.value or os.path.join(_WORKDIR.value, "analysis")
  print(f"{result['workdir']}: step {result['step']}, {result['weights']} weights, "
        f"{result['num_images']} images of split {result['split']!r}")
  print(attention.format_table(result["modules"]))
  if not result["masks"]:
    print(f"no foreground ratio: {result['no_masks_reason']}")
  print(f"wrote {out}/attention_stats.json and {result['num_images']} x "
        f"{len(result['modules'])} PNGs (image<i>_<module>.png)")
  logging.info("done")


if __name__ == "__main__":
  from vt_jax import runtime  # pylint: disable=g-import-not-at-top
  runtime.setup(sys.argv)  # before JAX starts: XLA flag, malloc, quiet console
  define_flags()
  app.run(main)
