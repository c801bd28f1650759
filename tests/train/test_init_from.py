"""config.init_from: exactly the backbone, from a converted torchvision ResNet or a workdir."""

import importlib.util
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.test_convert import torchvision_layout
from vt_jax import convert, models
from vt_jax.config_lib import models as model_configs
from vt_jax.config_lib import recipes
from vt_jax.train import checkpoint as ckpt_lib
from vt_jax.train import optim
from vt_jax.train import pretrained
from vt_jax.train import run_config
from vt_jax.train import state as state_lib


def _abstract(cfg, res=64):
  model = models.create_model(cfg)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, res, res, 3))))


def _flat(tree):
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))


def _check_exactly_backbone(variables, loaded, source, random_expected=()):
  before, after = _flat(variables), _flat(loaded)
  for path, value in after.items():
    if path[1] == "backbone" and path[2] not in random_expected:
      np.testing.assert_array_equal(np.asarray(value), source[path], err_msg="/".join(path))
    else:  # FPN, head (and stages the source lacks) are the model's own initial values
      assert value is before[path], "/".join(path)


def test_converted_torchvision_r50_loads_exactly_the_backbone(tmp_path):
  path = str(tmp_path / "r50.npz")
  convert.save_npz(convert.torchvision_to_flax(torchvision_layout(50), 50), path)
  source = pretrained.read(path)
  variables = _abstract(model_configs.vt_fpn(50, 20))
  loaded, taken, random = pretrained.backbone_variables(variables, source, path)
  assert random == []  # every backbone tensor of the FPN model came from the file
  assert len(taken) == sum(1 for k in source if k[1] == "backbone")  # the fc head was dropped
  _check_exactly_backbone(variables, loaded, source)


# torch runs in a process of its own: in one where TensorFlow was imported (other tests in
# the same worker), importing torch's CUDA build (its triton) can crash the process.
_TORCHVISION_R50 = """
import sys
import numpy as np
import torchvision
net = torchvision.models.resnet50(weights=None)
np.savez(sys.argv[1], **{k: v.numpy() for k, v in net.state_dict().items()})
"""


@pytest.mark.skipif(importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("torchvision") is None,
                    reason="torch/torchvision not installed (not a vt_jax dependency); pip "
                    "install torch torchvision to run it")
def test_real_torchvision_r50_state_dict(tmp_path):
  exported = str(tmp_path / "torchvision_r50.npz")
  proc = subprocess.run([sys.executable, "-c", _TORCHVISION_R50, exported],
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "torch" not in sys.modules  # this process never loads torch
  sd = convert.load_state_dict(exported)
  path = str(tmp_path / "tv50.npz")
  convert.save_npz(convert.torchvision_to_flax(sd, 50), path)
  variables = _abstract(model_configs.fpn(50, 171))
  _, taken, random = pretrained.backbone_variables(variables, pretrained.read(path), path)
  assert random == [] and len(taken) > 300


# For the jitted inits tests only start from: random initialisers are slow to compile, and
# without XLA's backend optimisations ~4x faster (same initialisers, an unoptimised build).
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def _save_workdir(workdir, model_cfg):
  """A vt_jax workdir holding one checkpoint of a new `model_cfg` run (its init, compiled as
  INIT_COMPILER_OPTIONS: only the tensors' names, shapes and the returned values count);
  returns the checkpoint's EMA variables, flat."""
  config = recipes.default()
  config.model = model_cfg
  model = models.create_model(model_cfg)
  tx = optim.make_optimizer(config, 10)
  create = jax.jit(lambda rng: state_lib.create(model, tx, rng, (32, 32, 3)))
  state = create.lower(jax.random.key(3)).compile(INIT_COMPILER_OPTIONS)(jax.random.key(3))
  manager = ckpt_lib.make_manager(str(workdir))
  ckpt_lib.save(manager, state)
  manager.wait_until_finished()
  manager.close()
  run_config.write(config, str(workdir))  # what a training run writes beside its checkpoints
  return _flat({"params": state.ema_params, "batch_stats": state.ema_batch_stats})


def test_vt_jax_workdir_loads_the_backbone_and_leaves_stage5_random_for_a_vt_source(tmp_path):
  small = dict(width=8, small_image_stem=True)
  resnet_src = {k: np.asarray(v) for k, v in
                _save_workdir(tmp_path / "r18", model_configs.resnet(18, num_classes=10, **small)
                              ).items()}
  target_cfg = model_configs.fpn(18, 11, fpn_channels=16, head_channels=16, head_norm_groups=4,
                                 **small)
  variables = _abstract(target_cfg)
  loaded, _, random = pretrained.backbone_variables(
      variables, pretrained.read(str(tmp_path / "r18")), "r18")
  assert random == []
  _check_exactly_backbone(variables, loaded, resnet_src)

  # A VT-ResNet has VT modules as stage 5: the FPN's ResNet stage 5 stays random, and says so.
  vt_src = _save_workdir(tmp_path / "vt18", model_configs.vt_resnet(
      18, num_classes=10, **small, vt=dict(tokens=4, token_channels=16, ffn_hidden=16, heads=2,
                                           projector_heads=2)))
  vt_src = {k: np.asarray(v) for k, v in vt_src.items()}
  loaded, taken, random = pretrained.backbone_variables(
      variables, pretrained.read(str(tmp_path / "vt18")), "vt18")
  assert random and {p[2] for p in random} == {"stage5"}
  assert {p[2] for p in taken} == {"stage1", "stage2", "stage3", "stage4"}
  _check_exactly_backbone(variables, loaded, vt_src, random_expected=("stage5",))


def test_mismatches_are_errors_naming_the_tensor(tmp_path):
  path = str(tmp_path / "r18.npz")
  convert.save_npz(convert.torchvision_to_flax(torchvision_layout(18), 18), path)
  source = pretrained.read(path)
  with pytest.raises(ValueError, match=r"tensor params/backbone/stage1/conv1/kernel has shape "
                                       r"\(7, 7, 3, 64\), the model expects \(3, 3, 3, 64\)"):
    pretrained.backbone_variables(
        _abstract(model_configs.fpn(18, 11, small_image_stem=True)), source, path)
  extra = dict(source)
  extra[("params", "backbone", "stage6", "conv", "kernel")] = np.zeros((1,))
  with pytest.raises(ValueError, match=r"tensor params/backbone/stage6/conv/kernel has no "
                                       r"counterpart in the model"):
    pretrained.backbone_variables(_abstract(model_configs.fpn(18, 11)), extra, path)
  with pytest.raises(ValueError, match=r"holds no backbone tensors"):
    pretrained.backbone_variables(_abstract(model_configs.fpn(18, 11)),
                                  {("params", "head", "fc", "kernel"): np.zeros((2, 2))}, path)
  with pytest.raises(FileNotFoundError, match="neither a .npz file nor a vt_jax workdir"):
    pretrained.read(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="no such file"):
    pretrained.read(str(tmp_path / "missing.npz"))
