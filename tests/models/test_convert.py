"""torchvision -> flax weight import."""

import importlib.util

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vt_jax import convert, models
from vt_jax.config_lib import models as model_configs
from vt_jax.models.resnet import STAGE_SIZES, is_bottleneck


def torchvision_layout(depth, num_classes=1000, seed=0):
  """A random state dict with torchvision's keys and OIHW shapes (written from
  torchvision's documented layout, independently of vt_jax.convert)."""
  rng = np.random.default_rng(seed)
  sd = {}

  def conv(name, o, i, k):
    sd[f"{name}.weight"] = rng.normal(0, (2 / (i * k * k)) ** 0.5, (o, i, k, k)).astype(np.float32)

  def bn(name, c):
    sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[f"{name}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[f"{name}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[f"{name}.num_batches_tracked"] = np.array(7)

  conv("conv1", 64, 3, 7)
  bn("bn1", 64)
  cin = 64
  for s, n in enumerate(STAGE_SIZES[depth]):
    w = 64 * 2**s
    out = w * 4 if is_bottleneck(depth) else w
    for b in range(n):
      p = f"layer{s + 1}.{b}"
      if is_bottleneck(depth):
        conv(f"{p}.conv1", w, cin, 1); bn(f"{p}.bn1", w)
        conv(f"{p}.conv2", w, w, 3); bn(f"{p}.bn2", w)
        conv(f"{p}.conv3", out, w, 1); bn(f"{p}.bn3", out)
      else:
        conv(f"{p}.conv1", w, cin, 3); bn(f"{p}.bn1", w)
        conv(f"{p}.conv2", w, w, 3); bn(f"{p}.bn2", w)
      if b == 0 and (s > 0 or cin != out):
        conv(f"{p}.downsample.0", out, cin, 1); bn(f"{p}.downsample.1", out)
      cin = out
  sd["fc.weight"] = rng.normal(0, 0.01, (num_classes, cin)).astype(np.float32)
  sd["fc.bias"] = rng.normal(0, 0.01, num_classes).astype(np.float32)
  return sd


def init(cfg, res=64):
  model = models.create_model(cfg)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, res, res, 3))))
  return model, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), variables)


@pytest.mark.parametrize("depth", [18, 50])
def test_conversion_fills_every_resnet_variable_exactly_once(depth):
  flat = convert.torchvision_to_flax(torchvision_layout(depth), depth)
  _, variables = init(model_configs.resnet(depth))
  target = flax.traverse_util.flatten_dict(variables)
  assert set(flat) == set(target)
  convert.apply_pretrained(variables, flat)  # shapes all agree


def test_backbone_only_fills_vt_resnet_stages_1_to_4():
  flat = convert.torchvision_to_flax(torchvision_layout(50), 50, backbone_only=True)
  _, variables = init(model_configs.vt_resnet(50, num_classes=10))
  target = flax.traverse_util.flatten_dict(variables)
  backbone = {k for k in target if k[1] == "backbone"}
  assert set(flat) == backbone
  new = flax.traverse_util.flatten_dict(convert.apply_pretrained(variables, flat))
  for k, v in flat.items():
    np.testing.assert_array_equal(new[k], v)
  for k in set(target) - backbone:  # VT modules and head untouched
    np.testing.assert_array_equal(new[k], target[k])


def test_stem_matches_torch_layout_reference():
  """Stage 1 on converted weights == conv/BN/ReLU/max-pool computed in NCHW/OIHW."""
  sd = torchvision_layout(18)
  model, variables = init(model_configs.resnet(18))
  variables = convert.apply_pretrained(variables, convert.torchvision_to_flax(sd, 18))
  x = np.random.default_rng(1).normal(size=(2, 3, 37, 41)).astype(np.float32)
  ref = jax.lax.conv_general_dilated(x, sd["conv1.weight"], (2, 2), ((3, 3), (3, 3)),
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
  c = lambda k: sd[f"bn1.{k}"][None, :, None, None]
  ref = (ref - c("running_mean")) / np.sqrt(c("running_var") + 1e-5) * c("weight") + c("bias")
  ref = jax.lax.reduce_window(np.maximum(ref, 0), -np.inf, jax.lax.max, (1, 1, 3, 3),
                              (1, 1, 2, 2), ((0, 0), (0, 0), (1, 1), (1, 1)))
  stem = models.resnet.Stem(64)
  out = stem.apply({"params": variables["params"]["backbone"]["stage1"],
                    "batch_stats": variables["batch_stats"]["backbone"]["stage1"]},
                   x.transpose(0, 2, 3, 1), train=False)
  np.testing.assert_allclose(out.transpose(0, 3, 1, 2), ref, rtol=1e-4, atol=1e-4)


def test_npz_round_trip_and_errors(tmp_path):
  sd = torchvision_layout(18)
  np.savez(tmp_path / "r18.npz", **sd)
  flat = convert.torchvision_to_flax(convert.load_state_dict(str(tmp_path / "r18.npz")), 18)
  convert.save_npz(flat, str(tmp_path / "out.npz"))
  back = convert.load_npz(str(tmp_path / "out.npz"))
  assert set(back) == set(flat)
  with pytest.raises(ValueError, match="basic-block ResNet but --depth=50"):
    convert.torchvision_to_flax(sd, 50)
  with pytest.raises(ValueError, match="residual blocks; ResNet-34"):
    convert.torchvision_to_flax(sd, 34)
  with pytest.raises(ValueError, match="unexpected key 'classifier.weight'"):
    convert.torchvision_to_flax(dict(sd, **{"classifier.weight": sd["fc.weight"]}), 18)
  _, variables = init(model_configs.resnet(18, num_classes=10))
  with pytest.raises(ValueError, match="head/fc/kernel has shape .* --backbone_only"):
    convert.apply_pretrained(variables, flat)
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    convert.load_state_dict(str(tmp_path / "missing.pth"))


HAVE_TORCHVISION = (importlib.util.find_spec("torch") is not None
                    and importlib.util.find_spec("torchvision") is not None)

# torch runs in a subprocess: loaded into a process where TensorFlow has run
# (other tests in the same worker), its native libraries crash the process.
TORCH_REFERENCE = """
import sys
import numpy as np
import torch
import torchvision
from vt_jax import convert
depth, out = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
net = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
with torch.no_grad():  # non-trivial BN statistics
  for m in net.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.running_mean.uniform_(-0.1, 0.1)
      m.running_var.uniform_(0.5, 1.5)
      m.weight.uniform_(0.5, 1.5)
      m.bias.uniform_(-0.1, 0.1)
torch.save(net.state_dict(), out + ".pth")
x = np.random.default_rng(0).normal(size=(2, 3, 96, 96)).astype(np.float32)
with torch.no_grad():
  logits = net(torch.from_numpy(x)).numpy()
state = convert.load_state_dict(out + ".pth")  # the .pth reader, with torch
np.savez(out + ".npz", **state)
np.savez(out + "_io.npz", x=x, logits=logits)
"""


@pytest.mark.skipif(not HAVE_TORCHVISION,
                    reason="torch/torchvision not installed (not a vt_jax dependency); "
                    "pip install torch torchvision to run the parity test")
@pytest.mark.parametrize("depth", [18, 50])
def test_logits_match_torchvision(depth, tmp_path):
  import subprocess
  import sys
  out = str(tmp_path / "net")
  proc = subprocess.run([sys.executable, "-c", TORCH_REFERENCE, str(depth), out],
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  io = np.load(out + "_io.npz")
  model, variables = init(model_configs.resnet(depth), 96)
  variables = convert.apply_pretrained(
      variables, convert.torchvision_to_flax(convert.load_state_dict(out + ".npz"), depth))
  logits = model.apply(variables, io["x"].transpose(0, 2, 3, 1))
  np.testing.assert_allclose(logits, io["logits"], rtol=1e-3, atol=1e-3)
