"""VTBlock in one's own flax model: keyword arguments, the paper's defaults for the rest."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vt_jax import models
from vt_jax.config_lib import models as model_configs


class TwoVTBlocks(nn.Module):
  """A small CNN, then a first (filter-tokenizer) and a recurrent VT block, then a head."""

  @nn.compact
  def __call__(self, images):
    x = nn.relu(nn.Conv(32, (3, 3), strides=(2, 2))(images))
    x, t = models.VTBlock(tokens=4, token_channels=24, heads=2, projector_heads=2,
                          first=True)(x)
    x, t = models.VTBlock(tokens=4, token_channels=24, heads=2, projector_heads=2,
                          first=False)(x, t)
    return nn.Dense(5)(t.mean(axis=1)), x


def test_two_blocks_with_keywords_only_init_and_apply():
  images = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  model = TwoVTBlocks()
  variables = model.init(jax.random.key(1), images)
  logits, x = model.apply(variables, images)
  assert logits.shape == (2, 5) and x.shape == (2, 8, 8, 32)
  assert np.all(np.isfinite(logits))
  params = variables["params"]
  # The first block tokenizes with a filter, the second recurrently (steered by tokens).
  assert "attention" in params["VTBlock_0"]["tokenizer"]
  assert "token_to_filter" in params["VTBlock_1"]["tokenizer"]
  # The paper's defaults for what was not given: the feed-forward width is C_T, the value
  # map goes C -> C_T, the projector maps back to the 32 feature channels.
  assert params["VTBlock_0"]["interaction"]["ffn1"]["kernel"].shape == (24, 24)
  assert params["VTBlock_0"]["tokenizer"]["value"]["kernel"].shape == (32, 24)
  assert params["VTBlock_1"]["projector"]["value"]["kernel"].shape == (24, 32)
  # The recurrent block's output depends on the tokens it is given.
  grad = jax.grad(lambda im: jnp.sum(model.apply(variables, im)[0]))(images)
  assert float(jnp.abs(grad).max()) > 0


def test_defaults_are_config_lib_vt_defaults_and_keywords_override_cfg():
  block = models.VTBlock(tokens=16, token_channels=256, first=True)
  settings = block.settings()
  defaults = model_configs.vt_defaults()
  for field in defaults:
    expected = {"tokens": 16, "token_channels": 256}.get(field, defaults[field])
    assert settings[field] == expected, field
  assert settings.variant == "iccv" and settings.heads == 16 and settings.recurrent

  cfg = ml_collections.FrozenConfigDict(model_configs.vt_resnet(50).vt)
  from_cfg = models.VTBlock(cfg, first=True).settings()
  assert from_cfg == cfg  # a model.vt section alone: exactly its values
  overridden = models.VTBlock(cfg, first=True, tokens=4, heads=2).settings()
  assert overridden.tokens == 4 and overridden.heads == 2
  assert overridden.query_groups == cfg.query_groups == 16  # the rest from cfg


def test_cfg_and_keyword_forms_build_the_same_block():
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 16))
  cfg = ml_collections.FrozenConfigDict(model_configs.vt_defaults().to_dict() | dict(
      tokens=4, token_channels=8, heads=2, projector_heads=2))
  a = models.VTBlock(cfg, first=True)
  b = models.VTBlock(tokens=4, token_channels=8, heads=2, projector_heads=2)
  va, vb = a.init(jax.random.key(1), x), b.init(jax.random.key(1), x)
  jax.tree.map(np.testing.assert_array_equal, va, vb)
  np.testing.assert_array_equal(a.apply(va, x)[1], b.apply(vb, x)[1])


def test_a_recurrent_block_without_tokens_says_how_to_call_it():
  x = jnp.zeros((1, 4, 4, 16))
  with pytest.raises(ValueError, match=r"needs the previous block's tokens"):
    models.VTBlock(tokens=4, token_channels=8, heads=2, projector_heads=2,
                   first=False).init(jax.random.key(0), x)
