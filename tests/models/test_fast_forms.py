"""The rewritten (faster) forms compute exactly what the plain flax layers compute."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from vt_jax.models import vt


@pytest.mark.parametrize("use_bias", [True, False])
def test_grouped_projection_is_flax_grouped_conv(use_bias):
  m = vt.GroupedProjection(96, 4, "query_groups", use_bias=use_bias)
  ref = nn.Conv(96, kernel_size=(1,), feature_group_count=4, use_bias=use_bias)
  x = jax.random.normal(jax.random.key(0), (2, 7, 32))
  params = m.init(jax.random.key(1), x)["params"]
  # Same tree as the Conv it replaces (checkpoints and converted weights load unchanged).
  assert jax.tree.map(np.shape, params["conv"]) == jax.tree.map(
      np.shape, ref.init(jax.random.key(1), x)["params"])
  # Random values everywhere (a zero bias or a symmetric kernel would hide a layout bug).
  params = jax.tree.map(lambda a: jax.random.normal(jax.random.key(3), a.shape), params)
  np.testing.assert_allclose(m.apply({"params": params}, x),
                             ref.apply({"params": params["conv"]}, x), rtol=1e-5, atol=1e-5)


def test_grouped_projection_names_its_field():
  with pytest.raises(ValueError, match="model.vt.query_groups=5"):
    vt.GroupedProjection(96, 5, "query_groups").init(jax.random.key(0), np.zeros((1, 2, 30)))


@pytest.mark.parametrize("stride,size", [(1, 6), (2, 6), (2, 7)])
def test_pointwise_conv_is_flax_1x1_conv(stride, size):
  from vt_jax.models import resnet  # pylint: disable=g-import-not-at-top
  m = resnet.conv(24, 1, stride, jax.numpy.float32, "conv")
  init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # resnet.conv's
  ref = nn.Conv(24, (1, 1), strides=(stride, stride), padding=((0, 0), (0, 0)), use_bias=False,
                kernel_init=init)
  x = jax.random.normal(jax.random.key(0), (2, size, size, 16))
  params = m.init(jax.random.key(1), x)["params"]
  # Same tree and the same initial values (same name, shape, initializer): runs reproduce.
  np.testing.assert_array_equal(params["kernel"], ref.init(jax.random.key(1), x)["params"]["kernel"])
  params = {"kernel": jax.random.normal(jax.random.key(2), params["kernel"].shape)}
  np.testing.assert_allclose(m.apply({"params": params}, x), ref.apply({"params": params}, x),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [8, 7])
def test_stem_max_pool_matches_flax_value_and_gradient(size):
  from vt_jax.models import resnet  # pylint: disable=g-import-not-at-top
  ref = lambda x: nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
  # Small integers: many ties inside windows, where the gradient rule matters (first max).
  x = jax.random.randint(jax.random.key(0), (2, size, size, 3), -3, 4).astype(np.float32)
  np.testing.assert_array_equal(resnet.max_pool_3x3_s2(x), ref(x))
  g = jax.random.normal(jax.random.key(1), ref(x).shape)
  grad = lambda f: jax.grad(lambda x: jax.numpy.sum(f(x) * g))(x)
  np.testing.assert_allclose(grad(resnet.max_pool_3x3_s2), grad(ref), rtol=1e-6, atol=1e-6)


# (kernel, stride, size): im2col-matmul maps (output <= 2 pixels: 1x1, 2x2, odd input,
# stride 2) and lax-convolution maps (output 3 and 4 pixels), each against flax's nn.Conv.
@pytest.mark.parametrize("kernel,stride,size", [(3, 1, 1), (3, 1, 2), (3, 2, 3), (3, 2, 4),
                                                (7, 2, 4), (3, 1, 3), (3, 2, 7)])
def test_spatial_conv_is_flax_conv_value_and_gradient(kernel, stride, size):
  from vt_jax.models import resnet  # pylint: disable=g-import-not-at-top
  m = resnet.conv(24, kernel, stride, jax.numpy.float32, "conv")
  init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # resnet.conv's
  pad = kernel // 2
  ref = nn.Conv(24, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                use_bias=False, kernel_init=init)
  x = jax.random.normal(jax.random.key(0), (2, size, size, 16))
  params = m.init(jax.random.key(1), x)["params"]
  np.testing.assert_array_equal(params["kernel"], ref.init(jax.random.key(1), x)["params"]["kernel"])
  params = {"kernel": jax.random.normal(jax.random.key(2), params["kernel"].shape)}
  out = m.apply({"params": params}, x)
  np.testing.assert_allclose(out, ref.apply({"params": params}, x), rtol=1e-5, atol=1e-5)
  g = jax.random.normal(jax.random.key(3), out.shape)
  grads = [jax.grad(lambda p, x: jax.numpy.sum(f.apply({"params": p}, x) * g), argnums=(0, 1))(
      params, x) for f in (m, ref)]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), *grads)


def test_spatial_conv_matmul_form_counts_the_same_macs(monkeypatch):
  # ResNet-18 at 32 px: stage 5 is 1x1 (matmul form); forcing lax's convolution everywhere
  # must give the same profile.
  import ml_collections  # pylint: disable=g-import-not-at-top
  from vt_jax import profile  # pylint: disable=g-import-not-at-top
  from vt_jax.config_lib import models as model_configs  # pylint: disable=g-import-not-at-top
  from vt_jax.models import resnet  # pylint: disable=g-import-not-at-top
  model = ml_collections.ConfigDict(model_configs.resnet(18, num_classes=10))
  fast = profile.profile(model, 32)
  monkeypatch.setattr(resnet.SpatialConv, "SMALL_MAP", -1)
  assert profile.profile(model, 32)["macs"] == fast["macs"]
