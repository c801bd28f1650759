"""MACs and parameters per stage, derived from the model itself.

    python -m vt_jax.profile --config=configs/vt_r50.py [--resolution=224] [--json]
    python -m vt_jax.profile --config=configs/vt_fpn_r50_cocostuff.py --resolution=800x1216

Stages: stage1-5 (the ResNet's, or VT modules as stage 5) and head; segmentation models
(fpn, vt_fpn) add "fpn": everything between the backbone and the semantic head (the FPN or
the VT-FPN), which the paper's Tables 9-10 compare.

MACs follow the paper's convention: multiply-accumulates of convolutions,
dense layers and attention matrix products; softmax, normalisation,
activations, pooling and interpolation are excluded.

Source of truth: the traced model, in its 'flax' layers (`as_written`: the form that
computes the paper's equations map by map). `count_macs` walks the jaxpr of
`model.apply` (batch 1) and, for every `dot_general` and
`conv_general_dilated`, adds (output elements) x (contraction size) -- exactly
the MACs the model performs, attributed to a stage by the flax module path in
the equation's name stack. XLA's compiled cost analysis counts FLOPs of every
op (elementwise ones too) after fusion and dead-code elimination, so it cannot
separate the paper's MACs from the rest; tests check it agrees to within its
elementwise overhead, and an analytic formula (vt_jax/analytic.py) agrees exactly.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vt_jax import models
from vt_jax.models.vt import INTERPOLATE_SCOPE

STAGES = ("stage1", "stage2", "stage3", "stage4", "stage5", "head")
SEGMENTATION_STAGES = ("stage1", "stage2", "stage3", "stage4", "stage5", "fpn", "head")
_STAGE_RE = re.compile(r"^(stage[1-5]|fpn|head)$")


def stages_of(model_config) -> tuple[str, ...]:
  return SEGMENTATION_STAGES if model_config.name in ("fpn", "vt_fpn") else STAGES


def parse_resolution(text) -> tuple[int, int]:
  """'224' -> (224, 224); '800x1216' -> (800, 1216) (height x width); ints pass through."""
  if isinstance(text, int):
    return text, text
  if isinstance(text, (tuple, list)):
    return int(text[0]), int(text[1])
  match = re.fullmatch(r"\s*(\d+)\s*(?:x\s*(\d+))?\s*", str(text))
  if not match or int(match.group(1)) < 1 or int(match.group(2) or 1) < 1:
    raise ValueError(f"--resolution={text!r}: give SIZE or HEIGHTxWIDTH in pixels, e.g. 224 "
                     "or 800x1216")
  h = int(match.group(1))
  return h, int(match.group(2) or h)


def _stage_of(path) -> str:
  for part in path:
    if _STAGE_RE.match(part):
      return part
  raise ValueError(f"operation at {'/'.join(path)!r} is in no stage (stage1-5, fpn, head)")


def _valid_taps(eqn) -> int:
  """Kernel taps per output feature that land inside the input (not in padding)."""
  dn = eqn.params["dimension_numbers"]
  lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
  out = eqn.outvars[0].aval.shape
  total = 1
  for i, (lo, _) in enumerate(eqn.params["padding"]):
    size_in, k = lhs[dn.lhs_spec[2 + i]], rhs[dn.rhs_spec[2 + i]]
    size_out, stride = out[dn.out_spec[2 + i]], eqn.params["window_strides"][i]
    dil = eqn.params["rhs_dilation"][i]
    total *= sum(1 for o in range(size_out) for t in range(k)
                 if 0 <= o * stride - lo + t * dil < size_in)
  batch = out[dn.out_spec[0]]
  return batch * total * rhs[dn.rhs_spec[1]]


def _eqn_macs(eqn, count_padding: bool = True) -> int:
  out = eqn.outvars[0].aval.shape
  if eqn.primitive.name == "dot_general":
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return int(np.prod(out)) * int(np.prod([lhs[d] for d in lhs_contract]))
  if eqn.primitive.name == "conv_general_dilated":
    rhs = eqn.invars[1].aval.shape
    out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
    if not count_padding:
      return _valid_taps(eqn) * rhs[out_feature_dim]
    per_output = int(np.prod(rhs)) // rhs[out_feature_dim]
    return int(np.prod(out)) * per_output
  return 0


def _walk(jaxpr, prefix, totals, count_padding=True):
  for eqn in jaxpr.eqns:
    stack = str(eqn.source_info.name_stack)
    path = tuple(p for p in (prefix + "/" + stack).split("/") if p)
    if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
      if any(INTERPOLATE_SCOPE == p.split("(")[0] for p in path):
        continue
      totals[_stage_of(path)] += _eqn_macs(eqn, count_padding)
    if eqn.primitive.name == "cond":
      # One branch runs: count the most expensive one.
      branch_totals = []
      for branch in eqn.params["branches"]:
        t = defaultdict(int)
        _walk(getattr(branch, "jaxpr", branch), "/".join(path), t, count_padding)
        branch_totals.append(t)
      for stage, macs in max(branch_totals, key=lambda t: sum(t.values())).items():
        totals[stage] += macs
      continue
    if eqn.primitive.name == "scan":
      body = defaultdict(int)
      _walk(eqn.params["jaxpr"].jaxpr, "/".join(path), body, count_padding)
      for stage, macs in body.items():
        totals[stage] += macs * eqn.params["length"]
      continue
    if eqn.primitive.name == "while":
      raise NotImplementedError(
          f"MACs of a while loop at {'/'.join(path)!r} depend on its trip count; "
          "unroll it (a Python loop) so the profile can count it")
    for param in eqn.params.values():
      sub = getattr(param, "jaxpr", None)
      if sub is not None:
        _walk(getattr(sub, "jaxpr", sub), "/".join(path), totals, count_padding)
      elif hasattr(param, "eqns"):
        _walk(param, "/".join(path), totals, count_padding)


def count_macs(model, variables, resolution, count_padding: bool = True) -> dict[str, int]:
  """MACs per stage of one forward pass of one image at `resolution` (int or (h, w)).

  count_padding=False skips conv taps that fall in the zero padding, as XLA's
  cost analysis does (the paper and torchvision count them).
  """
  h, w = parse_resolution(resolution)
  images = jnp.zeros((1, h, w, 3), jnp.float32)
  closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, images)
  totals = defaultdict(int)
  _walk(closed.jaxpr, "", totals, count_padding)
  stages = SEGMENTATION_STAGES if "fpn" in totals else STAGES
  return {s: totals.get(s, 0) for s in stages}


def count_params(params) -> dict[str, int]:
  """Parameters (trainable, not BN statistics) per stage."""
  totals = defaultdict(int)
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = tuple(getattr(k, "key", str(k)) for k in path)
    totals[_stage_of(keys)] += int(np.prod(leaf.shape))
  stages = SEGMENTATION_STAGES if "fpn" in totals else STAGES
  return {s: totals.get(s, 0) for s in stages}


def abstract_variables(model, resolution):
  h, w = parse_resolution(resolution)
  images = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)


def format_resolution(resolution) -> int | str:
  """(224, 224) -> 224 (the JSON's `resolution` for square inputs); (800, 1216) -> '800x1216'."""
  h, w = parse_resolution(resolution)
  return h if h == w else f"{h}x{w}"


def as_written(model_config):
  """`model_config` with model.layers='flax': the paper's equations, map by map.

  profile() counts MACs on this form. The 'tuned' form (the CPU default) computes the same
  functions with the same parameters, but its projector folds the query map into the keys
  where every head reads whole query groups (vt_jax.models.vt.folded_query_logits) and
  performs fewer MACs than the paper counts; count_macs on a model built from the config
  itself gives what a form performs.
  """
  config = ml_collections.ConfigDict(model_config)  # a copy; also of a FrozenConfigDict
  with config.unlocked():
    config.layers = "flax"
  return config


def profile(model_config, resolution=224) -> dict:
  """{'model', 'resolution', 'macs', 'params', 'stages': {stage: {'macs', 'params'}}}.

  resolution: int (square) or (height, width) or 'HxW'.
  """
  model = models.create_model(as_written(model_config))
  variables = abstract_variables(model, resolution)
  macs = count_macs(model, variables, resolution)
  params = count_params(variables["params"])
  name = model_config.name + str(model_config.depth)
  if model_config.name in ("vt_resnet", "vt_fpn"):
    name += "-" + model_config.vt.variant
  stages = stages_of(model_config)
  return {
      "model": name,
      "resolution": format_resolution(resolution),
      "macs": sum(macs.values()),
      "params": sum(params.values()),
      "stages": {s: {"macs": macs.get(s, 0), "params": params.get(s, 0)} for s in stages},
  }


def format_table(result: dict) -> str:
  h, w = parse_resolution(result["resolution"])
  lines = [f"{result['model']} at {h}x{w}",
           f"{'stage':<8} {'MMACs':>12} {'params (M)':>12}"]
  for s, v in result["stages"].items():
    lines.append(f"{s:<8} {v['macs'] / 1e6:>12.3f} {v['params'] / 1e6:>12.4f}")
  lines.append(f"{'total':<8} {result['macs'] / 1e6:>12.3f} {result['params'] / 1e6:>12.4f}")
  return "\n".join(lines)


def app_usage_error(msg):
  from absl import app  # pylint: disable=g-import-not-at-top
  return app.UsageError(msg)


# Table 8 of the paper (GMACs, M params) and torchvision's exact ResNets.
PAPER = {
    "resnet18": (1.814073344, 11.689512), "resnet34": (3.663761408, 21.797672),
    "resnet50": (4.089184256, 25.557032), "resnet101": (7.801405440, 44.549160),
    "vt_r18": (1.569, 11.7), "vt_r34": (3.236, 19.2), "vt_r50": (3.412, 21.4),
    "vt_r101": (7.129, 41.5),
}


def paper_table(config_dir: str = "configs", resolution: int = 224) -> str:
  """Markdown table: paper vs vt_jax for the eight model configs (and v1 variants)."""
  import os  # pylint: disable=g-import-not-at-top
  from vt_jax.config_lib import files as config_files  # pylint: disable=g-import-not-at-top
  rows = ["| model | paper GMACs | vt_jax GMACs | diff | paper params (M) | vt_jax params (M) "
          "| diff | stage-5 MACs vs ResNet |", "|---|---|---|---|---|---|---|---|"]
  stage5 = {}
  for name, (gmacs, mparams) in PAPER.items():
    path = os.path.join(config_dir, name + ".py")
    for arg in ([None, "v1", "tokens=16"] if name in ("vt_r50", "vt_r101") else
                [None, "v1"] if name.startswith("vt") else [None]):
      r = profile(config_files.load(f"{path}:{arg}" if arg else path).model, resolution)
      depth = name.replace("vt_r", "").replace("resnet", "")
      if name.startswith("resnet"):
        stage5[depth] = r["stages"]["stage5"]["macs"]
        ratio = ""
      else:
        ratio = f"{stage5[depth] / r['stages']['stage5']['macs']:.2f}x fewer"
      label = name + (f":{arg}" if arg else "")
      rows.append(f"| {label} | {gmacs:.3f} | {r['macs'] / 1e9:.3f} | "
                  f"{(r['macs'] / 1e9 / gmacs - 1) * 100:+.1f}% | {mparams:.1f} | "
                  f"{r['params'] / 1e6:.2f} | {(r['params'] / 1e6 / mparams - 1) * 100:+.1f}% | "
                  f"{ratio} |")
  return "\n".join(rows)


# Tables 9 (COCO-stuff, 800x1216) and 10 (LIP, 473x473): (total GMACs, FPN GMACs, mIoU).
PAPER_SEGMENTATION = {
    ("fpn", "cocostuff", 50): (159, 55.1, 40.78), ("vt_fpn", "cocostuff", 50): (113, 8.5, 41.00),
    ("fpn", "cocostuff", 101): (231, 55.1, 41.51),
    ("vt_fpn", "cocostuff", 101): (185, 8.5, 41.50),
    ("fpn", "lip", 50): (37.1, 12.8, 47.04), ("vt_fpn", "lip", 50): (26.4, 2.0, 47.39),
    ("fpn", "lip", 101): (54.4, 12.8, 47.35), ("vt_fpn", "lip", 101): (43.6, 2.0, 47.58),
}
SEGMENTATION_RESOLUTION = {"cocostuff": (800, 1216), "lip": (473, 473)}


def segmentation_table(config_dir: str = "configs") -> str:
  """Markdown table: Tables 9-10 (total and FPN-module GMACs) vs vt_jax's traced counts."""
  import os  # pylint: disable=g-import-not-at-top
  from vt_jax.config_lib import files as config_files  # pylint: disable=g-import-not-at-top
  rows = ["| config | input | paper GMACs | vt_jax GMACs | diff | paper FPN GMACs | "
          "vt_jax FPN GMACs | diff | paper mIoU |", "|---|---|---|---|---|---|---|---|---|"]
  for (name, dataset, depth), (total, fpn, miou) in PAPER_SEGMENTATION.items():
    path = os.path.join(config_dir, f"{name}_r50_{dataset}.py")
    spec = path if depth == 50 else f"{path}:depth={depth}"
    res = SEGMENTATION_RESOLUTION[dataset]
    r = profile(config_files.load(spec).model, res)
    got_total, got_fpn = r["macs"] / 1e9, r["stages"]["fpn"]["macs"] / 1e9
    rows.append(f"| {os.path.basename(spec)} | {res[0]}x{res[1]} | {total} | {got_total:.1f} | "
                f"{(got_total / total - 1) * 100:+.1f}% | {fpn} | {got_fpn:.2f} | "
                f"{(got_fpn / fpn - 1) * 100:+.1f}% | {miou:.2f} |")
  return "\n".join(rows)


def main(argv):
  del argv
  from absl import flags
  if flags.FLAGS.paper_table:
    print(paper_table(resolution=int(flags.FLAGS.resolution)))
    print()
    print(segmentation_table())
    return
  cfg = flags.FLAGS.config
  if cfg is None:
    raise app_usage_error("--config=FILE is required (or --paper_table)")
  try:
    resolution = parse_resolution(flags.FLAGS.resolution)
  except ValueError as e:
    raise app_usage_error(str(e)) from None
  result = profile(cfg.model, resolution)
  if flags.FLAGS.json:
    print(json.dumps(result))
  else:
    print(format_table(result))


if __name__ == "__main__":
  import sys
  from absl import app, flags
  from ml_collections import config_flags
  from vt_jax import runtime
  runtime.setup(sys.argv)  # before JAX starts: XLA flag, malloc, quiet console
  config_flags.DEFINE_config_file("config", None, "Config file (FILE[:ARG]).", lock_config=True)
  flags.DEFINE_string("resolution", "224",
                      "Input size in pixels: SIZE (square) or HEIGHTxWIDTH, e.g. 800x1216.")
  flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
  flags.DEFINE_bool("paper_table", False,
                    "Print the paper-vs-vt_jax markdown tables of docs/paper_vs_vt_jax.md and "
                    "docs/segmentation.md (all model configs; "
                    "segmentation at Tables 9-10's input sizes).")
  app.run(main)
