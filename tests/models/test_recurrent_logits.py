"""model.vt.recurrent_logits: the forms of the recurrent tokenizer's logits (Eq. 2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vt_jax import attention, models, profile
from vt_jax.config_lib import models as model_configs
from vt_jax.models import vt

B, N, C, L, CT = 2, 20, 16, 6, 24


def _inputs():
  x = jax.random.normal(jax.random.key(0), (B, N, C))
  # Large, nearly parallel steering tokens, as a residual transformer leaves them.
  base = 30.0 * jax.random.normal(jax.random.key(1), (1, 1, CT))
  t = base + jax.random.normal(jax.random.key(2), (B, L, CT))
  return x, t


def _attention(form):
  x, t = _inputs()
  module = vt.RecurrentTokenizer(L, CT, (4, 5), logits=form)
  variables = module.init(jax.random.key(3), x, t)
  _, state = module.apply(variables, x, t, mutable=["intermediates"])
  a = jax.tree_util.tree_leaves(state["intermediates"])[0]
  return np.asarray(a), variables["params"], x, t


def _layer_norm(t):
  mu = t.mean(-1, keepdims=True)
  return (t - mu) / jnp.sqrt(((t - mu) ** 2).mean(-1, keepdims=True) + 1e-6)


@pytest.mark.parametrize("form", vt.RECURRENT_LOGITS)
def test_each_form_is_its_formula(form):
  a, params, x, t = _attention(form)
  w = params["token_to_filter"]["kernel"]  # W_{T->R}: [C_T, C]
  steer = _layer_norm(t) if form == "layernorm" else t
  w_r = steer @ w  # [B, L, C]
  if form == "normalized":
    w_r = w_r / jnp.linalg.norm(w_r, axis=-1, keepdims=True)
  logits = jnp.einsum("bnc,blc->bnl", x, w_r)
  if form == "scaled":
    logits = logits / np.sqrt(C)
  np.testing.assert_allclose(a, jax.nn.softmax(logits, axis=1), rtol=1e-4, atol=1e-6)


def test_paper_form_is_the_default_module_and_the_literal_equation_bit_for_bit():
  x, t = _inputs()
  default = vt.RecurrentTokenizer(L, CT, (4, 5))
  paper = vt.RecurrentTokenizer(L, CT, (4, 5), logits="paper")
  variables = default.init(jax.random.key(3), x, t)
  np.testing.assert_array_equal(default.apply(variables, x, t), paper.apply(variables, x, t))
  w_r = t @ variables["params"]["token_to_filter"]["kernel"]
  a = jax.nn.softmax(jnp.einsum("bnc,blc->bnl", x, w_r), axis=1)
  _, state = paper.apply(variables, x, t, mutable=["intermediates"])
  np.testing.assert_array_equal(jax.tree_util.tree_leaves(state["intermediates"])[0], a)


def test_remedies_keep_the_parameters_and_only_normalized_unsaturates_large_tokens():
  shapes = {f: jax.tree_util.tree_map(np.shape, _attention(f)[1]) for f in vt.RECURRENT_LOGITS}
  assert all(s == shapes["paper"] for s in shapes.values())
  ent = {f: attention.entropy(_attention(f)[0]).mean() for f in vt.RECURRENT_LOGITS}
  # Eq. 2 literally: with steering tokens of norm ~150 every token reads about one pixel.
  assert ent["paper"] < 0.2
  # Unit rows of W_R bound the logits by |x|, whatever the tokens' size.
  assert ent["normalized"] > 0.5 * np.log(N)
  assert ent["scaled"] > ent["paper"] and ent["normalized"] > ent["scaled"]


def test_entropy_is_log_pixels_for_uniform_and_zero_for_one_hot():
  uniform = np.full((1, N, 3), 1.0 / N)
  np.testing.assert_allclose(attention.entropy(uniform), np.log(N))
  one_hot = np.zeros((1, N, 3))
  one_hot[0, 5] = 1.0
  np.testing.assert_allclose(attention.entropy(one_hot), 0.0, atol=1e-12)


def _tiny(form):
  return model_configs.vt_resnet(18, num_classes=10, width=4, small_image_stem=True, vt=dict(
      tokens=4, token_channels=16, ffn_hidden=16, heads=2, projector_heads=2,
      recurrent_logits=form))


def test_forms_cost_the_same_macs_and_parameters():
  costs = set()
  for form in vt.RECURRENT_LOGITS:
    result = profile.profile(_tiny(form), resolution=32)
    costs.add((result["macs"], result["params"]))
  assert len(costs) == 1


def test_unknown_form_names_the_field():
  with pytest.raises(ValueError, match="model.vt.recurrent_logits='softmax'"):
    models.create_model(_tiny("softmax"))
