"""vt_jax.attention: the figures' definitions on hand-made attention, and the maps of a real
VT model's sown intermediates."""

import math

import jax
import numpy as np
import pytest

from vt_jax import attention
from vt_jax.config_lib import files
from vt_jax import models


def test_uniform_attention_has_entropy_log_hw_and_foreground_ratio_one():
  b, h, w, l = 2, 4, 6, 3
  a = np.full((b, h * w, l), 1.0 / (h * w))
  np.testing.assert_allclose(attention.entropy(a), math.log(h * w), rtol=1e-12)
  fg = np.zeros((b, 8, 12), bool)
  fg[0, :3, :5] = True
  fg[1, 4:, 2:] = True
  valid = np.ones_like(fg)
  valid[1, 0, :] = False  # an ignored row changes nothing for uniform attention
  fg_frac, valid_frac = attention.foreground_fraction(fg, valid, (h, w))
  np.testing.assert_allclose(attention.foreground_ratio(a, fg_frac, valid_frac), 1.0,
                             rtol=1e-12)
  assert attention.foreground_ratio(a, fg_frac, valid_frac, axis=(0, 1)) == pytest.approx(1.0)


def test_foreground_ratio_and_entropy_of_a_peaked_token():
  # 4 pixels, pixel 0 foreground: 0.7 of the mass on 1 fg pixel, 0.1 on each of 3 bg pixels.
  a = np.array([[[0.7], [0.1], [0.1], [0.1]]])
  fg = np.array([[[True, False], [False, False]]])
  fg_frac, valid_frac = attention.foreground_fraction(fg, np.ones_like(fg), (2, 2))
  assert attention.foreground_ratio(a, fg_frac, valid_frac)[0] == pytest.approx(7.0)
  expected = -(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1))
  assert attention.entropy(a)[0, 0] == pytest.approx(expected)
  one_hot = np.array([[[1.0], [0.0], [0.0], [0.0]]])
  assert attention.entropy(one_hot)[0, 0] == 0.0
  # An image that is all foreground has no background to compare with: left out.
  all_fg = np.ones_like(fg)
  fg_frac, valid_frac = attention.foreground_fraction(all_fg, all_fg, (2, 2))
  assert np.isnan(attention.foreground_ratio(a, fg_frac, valid_frac)[0])


def test_foreground_fraction_averages_each_cell():
  fg = np.zeros((1, 4, 4), bool)
  fg[0, 0, 0] = fg[0, 3, 2] = fg[0, 3, 3] = True
  fg_frac, valid_frac = attention.foreground_fraction(fg, np.ones_like(fg), (2, 2))
  np.testing.assert_allclose(fg_frac, [[0.25, 0.0, 0.0, 0.5]])
  np.testing.assert_allclose(valid_frac, 1.0)


def test_interaction_maps_mix_spatial_maps_by_token_attention():
  rng = np.random.default_rng(0)
  a = rng.dirichlet(np.ones(16), size=(2, 3)).transpose(0, 2, 1)  # [B, 16 px, 3 tokens]
  w = rng.dirichlet(np.ones(3), size=(2, 2, 3))                   # [B, heads, 3, 3]
  inter = {"stage5": {"vt1": {"tokenizer": {"spatial_attention": (a,)},
                              "interaction": {"token_attention": (w,)}}}}
  (m,) = attention.token_maps(inter, (32, 32), tokens=3)
  assert m.shape == (4, 4) and m.token_ids == [0, 1, 2]
  wm = w.mean(axis=1)
  for l in range(3):
    expected = sum(wm[:, l, k, None] * a[:, :, k] for k in range(3))
    np.testing.assert_allclose(m.interaction[:, :, l], expected, rtol=1e-5)
  np.testing.assert_allclose(m.interaction.sum(axis=1), 1.0, rtol=1e-5)


def test_v1_maps_name_the_re_extracted_tokens_and_keep_the_others():
  rng = np.random.default_rng(1)
  a1 = rng.dirichlet(np.ones(4), size=(1, 4)).transpose(0, 2, 1)  # 4 tokens
  a2 = rng.dirichlet(np.ones(4), size=(1, 2)).transpose(0, 2, 1)  # 2 re-extracted
  eye = np.eye(4)[None, None]
  inter = {"stage5": {
      "vt1": {"tokenizer": {"spatial_attention": (a1,)},
              "interaction": {"token_attention": (eye,)}},
      "vt2": {"tokenizer": {"spatial_attention": (a2,)},
              "interaction": {"token_attention": (eye,)}}}}
  first, second = attention.token_maps(inter, (8, 8), tokens=4)
  assert second.token_ids == [2, 3] and "re-extracted" in second.note
  # Output tokens 0, 1 are the previous module's tokens 2, 3; 2, 3 the new ones.
  np.testing.assert_allclose(second.interaction, np.concatenate([a1[..., 2:], a2], -1))


def test_token_maps_of_a_real_model_read_its_sown_intermediates():
  config = files.load("configs/ablations.py:width=2,canvas=32,tokens=4")
  model = models.create_model(config.model)
  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = model.init(jax.random.key(1), images, train=False)
  _, state = model.apply(variables, images, train=False, mutable=["intermediates"])
  maps = attention.token_maps(state["intermediates"], (32, 32), tokens=4)
  assert [m.name for m in maps] == ["stage5/vt1", "stage5/vt2"]
  for m in maps:
    assert m.shape == (8, 8) and m.spatial.shape == (2, 64, 4)
    np.testing.assert_allclose(m.interaction.sum(axis=1), 1.0, rtol=1e-5)
  summary = attention.summarise(maps)
  assert all(e["entropy"] <= e["uniform_entropy"] + 1e-6 for e in summary.values())
  assert "stage5/vt2" in attention.format_table(summary)
  with pytest.raises(ValueError, match="no 'spatial_attention'"):
    attention.token_maps({}, (32, 32), tokens=4)
