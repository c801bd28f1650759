"""torchvision ResNet weights -> vt_jax variables (nothing is ever downloaded).

    python -m vt_jax.convert --input=resnet50.pth --depth=50 --output=resnet50.npz
    python -m vt_jax.convert --input=resnet50.pth --depth=50 --backbone_only --output=r50_s1-4.npz

The input is a local torchvision `state_dict` saved with `torch.save` (.pth/.pt;
reading it needs torch) or the same tensors in a NumPy `.npz` (keys as in the
state dict: `layer1.0.conv1.weight`, ...). The output `.npz` holds flax paths
(`params/backbone/stage2/block1/conv1/kernel`, `batch_stats/...`).

`apply_pretrained(variables, load_npz(path))` places them into a model's variables,
checking every name and shape; it is the one loader of pretrained tensors: a new training
run's `config.init_from` (vt_jax.train.pretrained) goes through it too, after keeping only
the backbone. Stages 1-4 are the same tensors in ResNets, VT-ResNets and the FPNs.
"""

from __future__ import annotations

import os
import re

import numpy as np

from vt_jax.models.resnet import STAGE_SIZES, check_depth, is_bottleneck

_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a torchvision state dict from .pth/.pt (torch) or .npz."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"no checkpoint at {path!r}")
  if path.endswith(".npz"):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  if path.endswith((".pth", ".pt")):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f"reading {path!r} needs torch (pip install torch); or export the state dict to .npz "
          "with numpy: np.savez(out, **{k: v.numpy() for k, v in sd.items()})") from e
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}
  raise ValueError(f"{path!r}: expected a .pth, .pt or .npz torchvision state dict")


def _flax_path(key: str, depth: int) -> tuple[str, ...] | None:
  """torchvision key -> flax path (collection first); None for ignored buffers."""
  if key.endswith("num_batches_tracked"):
    return None
  m = re.fullmatch(r"(conv1|bn1)\.(\w+)", key)
  if m:
    return _layer(("backbone", "stage1", m.group(1)), m.group(2))
  m = re.fullmatch(r"layer([1-4])\.(\d+)\.(conv[1-3]|bn[1-3]|downsample\.[01])\.(\w+)", key)
  if m:
    stage, block, layer, leaf = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    if block >= STAGE_SIZES[depth][stage - 1]:
      raise ValueError(f"{key!r}: ResNet-{depth} has {STAGE_SIZES[depth][stage - 1]} blocks "
                       f"in layer{stage}; is --depth right?")
    layer = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}.get(layer, layer)
    return _layer(("backbone", f"stage{stage + 1}", f"block{block + 1}", layer), leaf)
  m = re.fullmatch(r"fc\.(weight|bias)", key)
  if m:
    return ("params", "head", "fc", "kernel" if m.group(1) == "weight" else "bias")
  raise ValueError(f"unexpected key {key!r}: not a torchvision ResNet state dict")


def _layer(prefix: tuple[str, ...], leaf: str) -> tuple[str, ...]:
  if "conv" in prefix[-1]:
    if leaf != "weight":
      raise ValueError(f"unexpected conv tensor {'.'.join(prefix)}.{leaf}")
    return ("params",) + prefix + ("kernel",)
  collection, name = _BN[leaf]
  return (collection,) + prefix + (name,)


def _to_flax(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel" and value.ndim == 4:  # OIHW -> HWIO
    return value.transpose(2, 3, 1, 0)
  if path[-1] == "kernel" and value.ndim == 2:  # [out, in] -> [in, out]
    return value.T
  return value


def torchvision_to_flax(state_dict: dict[str, np.ndarray], depth: int,
                        backbone_only: bool = False) -> dict[tuple[str, ...], np.ndarray]:
  """Flat {flax path: array}; backbone_only keeps stages 1-4 (what VT-ResNets share)."""
  check_depth(depth)
  expected_blocks = sum(STAGE_SIZES[depth])
  has_conv3 = any(k.endswith("conv3.weight") for k in state_dict)
  if has_conv3 != is_bottleneck(depth):
    raise ValueError(f"state dict is a {'bottleneck' if has_conv3 else 'basic-block'} ResNet "
                     f"but --depth={depth}; pass the depth it was trained with")
  blocks = {m.group(0) for k in state_dict if (m := re.match(r"layer\d\.\d+", k))}
  if len(blocks) != expected_blocks:
    raise ValueError(f"state dict has {len(blocks)} residual blocks; ResNet-{depth} has "
                     f"{expected_blocks}")
  out = {}
  for key, value in state_dict.items():
    path = _flax_path(key, depth)
    if path is None:
      continue
    if backbone_only and (path[2] == "stage5" or path[1] == "head"):
      continue
    out[path] = _to_flax(path, np.asarray(value, np.float32))
  return out


def apply_pretrained(variables, flat: dict[tuple[str, ...], np.ndarray],
                     source: str = "pretrained"):
  """Returns `variables` with every tensor in `flat` replaced; checks names and shapes.

  Raises, naming the tensor and `source` (what the errors call the tensors' origin), if a
  tensor has no place in the model or the wrong shape; leaves the model's other variables
  (e.g. VT modules, a new head) as they are.
  """
  import flax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  target = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  for path, value in flat.items():
    name = "/".join(path)
    if path not in target:
      raise ValueError(f"{source}: tensor {name} has no counterpart in the model (a different "
                       "depth, width or stem? model.depth/width/small_image_stem must match "
                       "the source's)")
    if tuple(target[path].shape) != tuple(value.shape):
      raise ValueError(f"{source}: tensor {name} has shape {tuple(value.shape)}, the model "
                       f"expects {tuple(target[path].shape)} (a different stem or "
                       "num_classes? convert with --backbone_only to keep stages 1-4 only)")
    target[path] = jnp.asarray(value, target[path].dtype)
  return flax.traverse_util.unflatten_dict(target)


def save_npz(flat: dict[tuple[str, ...], np.ndarray], path: str) -> None:
  np.savez(path, **{"/".join(k): v for k, v in flat.items()})


def load_npz(path: str) -> dict[tuple[str, ...], np.ndarray]:
  with np.load(path) as f:
    return {tuple(k.split("/")): f[k] for k in f.files}


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  flat = torchvision_to_flax(load_state_dict(f.input), f.depth, f.backbone_only)
  save_npz(flat, f.output)
  n = sum(v.size for k, v in flat.items() if k[0] == "params")
  print(f"wrote {len(flat)} tensors ({n:,} parameters) to {f.output}")


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from vt_jax import runtime  # pylint: disable=g-import-not-at-top
  runtime.setup(sys.argv)  # quiet console
  flags.DEFINE_string("input", None, "torchvision ResNet state dict (.pth/.pt/.npz).")
  flags.DEFINE_integer("depth", None, "ResNet depth: 18, 34, 50 or 101.")
  flags.DEFINE_string("output", None, "Output .npz of flax paths.")
  flags.DEFINE_bool("backbone_only", False, "Keep stages 1-4 only (for VT-ResNets).")
  flags.mark_flags_as_required(["input", "depth", "output"])
  app.run(main)
