"""config.mesh.rules: regexes over the leaf's '/'-joined path pick each leaf's sharding."""

import jax
import pytest

from tests.train import train_fakes
from vt_jax import models
from vt_jax.train import optim
from vt_jax.train import sharding as sharding_lib
from vt_jax.train import state as state_lib


def _shardings(rules):
  config = train_fakes.tiny_config()
  config.mesh.update(data=4, model=2)
  mesh = sharding_lib.make_mesh(config.mesh, jax.devices()[:8])
  model = models.create_model(config.model)
  tx = optim.make_optimizer(config, 4)
  shapes = jax.eval_shape(lambda: state_lib.create(model, tx, jax.random.key(0), (16, 16, 3)))
  shardings = sharding_lib.state_shardings(shapes, mesh, rules)
  return shapes, shardings


def _spec(shardings, *keys):
  node = shardings
  for k in keys:
    node = getattr(node, k) if isinstance(k, str) and hasattr(node, k) else node[k]
  return tuple(node.spec)


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 (virtual CPU) devices")
def test_rules_match_the_slash_joined_path_of_params_and_optimizer_state():
  conv = ("backbone", "stage2", "block1", "conv1", "kernel")  # [3, 3, 8, 8]
  rules = [("params/backbone/stage2/block1/conv1/kernel", "replicate"),
           (r"opt_state/\d+/0/trace/backbone/stage2/.*", "replicate"),
           (".*", "fsdp")]
  _, shardings = _shardings(rules)
  assert _spec(shardings, "params", *conv) == ()  # the first rule, by its full path
  assert "model" in _spec(shardings, "ema_params", *conv)  # not named: falls to fsdp
  assert "model" in _spec(shardings, "params", "backbone", "stage2", "block1", "conv2",
                          "kernel")
  momentum = shardings.opt_state[2][0].trace
  assert tuple(momentum["backbone"]["stage2"]["block1"]["conv1"]["kernel"].spec) == ()
  assert "model" in tuple(momentum["backbone"]["stage3"]["block1"]["conv1"]["kernel"].spec)


def test_unknown_strategy_names_the_field():
  with pytest.raises(ValueError, match="config.mesh.rules: unknown strategy 'shard'"):
    _shardings([(".*", "shard")])
