"""FPN / VT-FPN: shapes at any input size, costs on Tables 9-10, traced == analytic."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vt_jax import analytic, models, profile
from vt_jax.config_lib import models as model_configs


def _tiny(name, **kw):
  small = dict(width=8, small_image_stem=True, fpn_channels=16, head_channels=16,
               head_norm_groups=4)
  small.update(kw)
  if name == "fpn":
    return model_configs.fpn(18, 11, **small)
  return model_configs.vt_fpn(18, 11, **small, vt=dict(tokens=4, token_channels=32, heads=4,
                                                       projector_heads=4))


@functools.lru_cache(maxsize=None)
def _variables(name, top_down=True, **kw):
  """_tiny(name, **kw)'s variables from a jitted init on a (1, 32, 32, 3) zero batch (key 0).

  Compiling that init (the random initialisers) takes ~30 s on 2 CPU cores, so each
  configuration is initialised once per test process and shared by the tests below. The
  values do not depend on the init batch: the parameters have no input-size dependence and
  BatchNorm statistics start at their initial values whatever the batch.
  """
  cfg = _tiny(name, **kw)
  if not top_down:
    cfg.vt.top_down = False
  return jax.jit(models.create_model(cfg).init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize("name", ["fpn", "vt_fpn"])
def test_paper_size_models_give_logits_at_473x473(name):
  cfg = getattr(model_configs, name)(50, 20)
  model = models.create_model(cfg)
  images = jax.ShapeDtypeStruct((2, 473, 473, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
  logits = jax.eval_shape(lambda v, x: model.apply(v, x), variables, images)
  assert logits.shape == (2, 473, 473, 20) and logits.dtype == jnp.float32
  # The backbone subtree has a classifier's names, so ImageNet weights load by path.
  assert set(variables["params"]) == {"backbone", "fpn", "head"}
  assert set(variables["params"]["backbone"]) == {f"stage{i}" for i in range(1, 6)}


@pytest.mark.parametrize("name", ["fpn", "vt_fpn"])
@pytest.mark.parametrize("hw", [(37, 45), (32, 32)])
def test_small_variants_run_at_odd_sizes_and_depend_on_the_image(name, hw):
  model = models.create_model(_tiny(name))
  x = jax.random.normal(jax.random.key(1), (2, *hw, 3))
  variables = _variables(name)  # initialised at 32x32: no parameter depends on the size
  apply = jax.jit(model.apply)
  out = apply(variables, x)
  assert out.shape == (2, *hw, 11)
  assert np.all(np.isfinite(np.asarray(out)))
  # Per-image: changing one image leaves the other's logits alone, and changes its own.
  x2 = x.at[1].set(-x[1])
  out2 = apply(variables, x2)
  np.testing.assert_allclose(out2[0], out[0], rtol=1e-5, atol=1e-7)
  assert not np.allclose(out2[1], out[1])


# Tables 9 (COCO-stuff, 800x1216) and 10 (LIP, 473x473): GMACs of the FPN module and of the
# whole model, each to be met within +-10%.
TARGETS = [
    ("fpn", 50, 171, (800, 1216), 55.1, 159), ("vt_fpn", 50, 171, (800, 1216), 8.5, 113),
    ("fpn", 101, 171, (800, 1216), 55.1, 231), ("vt_fpn", 101, 171, (800, 1216), 8.5, 185),
    ("fpn", 50, 20, (473, 473), 12.8, 37.1), ("vt_fpn", 50, 20, (473, 473), 2.0, 26.4),
    ("fpn", 101, 20, (473, 473), 12.8, 54.4), ("vt_fpn", 101, 20, (473, 473), 2.0, 43.6),
]


@pytest.mark.parametrize("name,depth,classes,res,fpn_g,total_g", TARGETS)
def test_costs_land_on_tables_9_and_10(name, depth, classes, res, fpn_g, total_g):
  # analytic.count equals the traced profile exactly (next test), and is instant.
  r = analytic.count(getattr(model_configs, name)(depth, classes), res)
  assert abs(r["stages"]["fpn"]["macs"] / 1e9 / fpn_g - 1) <= 0.10, r["stages"]["fpn"]
  assert abs(r["macs"] / 1e9 / total_g - 1) <= 0.10, r["macs"]


def test_detectron2_fpn_mac_split_at_800x1216():
  """Laterals 7.47 G + output convs 47.63 G = Table 9's 55.10 G (biases are no MACs)."""
  cfg = model_configs.fpn(50, 171)
  model = models.create_model(cfg)
  variables = profile.abstract_variables(model, (800, 1216))
  macs = profile.count_macs(model, variables, (800, 1216))
  assert macs["fpn"] == 7_471_104_000 + 47_628_288_000


@pytest.mark.parametrize("cfg,res", [
    (model_configs.fpn(50, 20), 473), (model_configs.vt_fpn(50, 20), 473),
    (model_configs.vt_fpn(18, 11, vt=dict(variant="v1", tokens=4, token_channels=64)), 97),
    (_tiny("fpn"), (40, 56)), (_tiny("vt_fpn", width=16), 64)])
def test_traced_and_analytic_counts_agree_exactly(cfg, res):
  traced = profile.profile(cfg, res)
  closed = analytic.count(cfg, res)
  assert traced["stages"] == closed["stages"]
  assert list(traced["stages"]) == ["stage1", "stage2", "stage3", "stage4", "stage5", "fpn",
                                    "head"]


def test_vt_fpn_backbone_and_head_equal_fpn():
  fpn = analytic.count(model_configs.fpn(50, 20), 473)["stages"]
  vt = analytic.count(model_configs.vt_fpn(50, 20), 473)["stages"]
  for s in ("stage1", "stage2", "stage3", "stage4", "stage5", "head"):
    assert fpn[s] == vt[s]
  assert fpn["fpn"]["macs"] / vt["fpn"]["macs"] > 5  # the paper: 6.5x fewer


def test_profile_cli_takes_height_x_width_and_reports_the_fpn_stage():
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  out = subprocess.run([sys.executable, "-m", "vt_jax.profile",
                        "--config=configs/quickstart_seg.py:model=vt_fpn", "--resolution=48x80",
                        "--json"], capture_output=True, text=True, check=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["resolution"] == "48x80" and result["model"] == "vt_fpn18-iccv"
  assert list(result["stages"]) == ["stage1", "stage2", "stage3", "stage4", "stage5", "fpn",
                                    "head"]
  assert sum(s["macs"] for s in result["stages"].values()) == result["macs"]
  bad = subprocess.run([sys.executable, "-m", "vt_jax.profile",
                        "--config=configs/quickstart_seg.py", "--resolution=48y80"],
                       capture_output=True, text=True)
  assert bad.returncode != 0 and "--resolution='48y80'" in bad.stderr


def _neck_outputs(cfg, variables, x):
  _, state = models.create_model(cfg).apply(
      variables, x, mutable=["intermediates"],
      capture_intermediates=lambda mdl, _: mdl.name == "fpn")
  return state["intermediates"]["fpn"]["__call__"][0]


def test_top_down_path_adds_the_coarser_level_and_costs_nothing():
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  plain, td = _tiny("vt_fpn"), _tiny("vt_fpn")
  plain.vt.top_down = False
  assert td.vt.top_down  # the default
  # Two separate inits (of each configuration, as configured): the path must not move them.
  v_plain, v_td = _variables("vt_fpn", top_down=False), _variables("vt_fpn")
  out_plain, out_td = _neck_outputs(plain, v_plain, x), _neck_outputs(td, v_td, x)
  # Same parameters (the path has none), and each level is its projection plus the next
  # coarser level's output upsampled by nearest neighbour, coarsest first.
  chex_equal = jax.tree_util.tree_map(np.array_equal, v_plain, v_td)
  assert all(jax.tree_util.tree_leaves(chex_equal))
  np.testing.assert_array_equal(out_td[3], out_plain[3])
  for i in (2, 1, 0):
    up = jax.image.resize(out_td[i + 1], out_td[i].shape, "nearest")
    np.testing.assert_allclose(out_td[i], out_plain[i] + up, rtol=1e-6, atol=1e-6)
  costs = [analytic.count(c, 64) for c in (plain, td)]
  assert costs[0]["macs"] == costs[1]["macs"] and costs[0]["params"] == costs[1]["params"]
  traced = [profile.profile(c, 64) for c in (plain, td)]
  assert traced[0]["macs"] == traced[1]["macs"]


def test_zero_init_value_starts_vt_fpn_as_laterals():
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  cfg = _tiny("vt_fpn")
  assert cfg.vt.zero_init_value  # the default
  cfg.vt.top_down = False  # the levels alone
  variables = _variables("vt_fpn", top_down=False)  # cfg's init
  _, feats = models.create_model(cfg).apply(
      variables, x, mutable=["intermediates"],
      capture_intermediates=lambda mdl, _: mdl.name in ("fpn", "backbone"))
  inter = feats["intermediates"]
  levels = inter["fpn"]["__call__"][0]
  stages = inter["backbone"]["__call__"][0][1]  # (output, features)
  for i, name in enumerate(("stage2", "stage3", "stage4", "stage5")):
    q = variables["params"]["fpn"][f"projector{i + 2}"]["query"]
    assert not np.any(variables["params"]["fpn"][f"projector{i + 2}"]["value"]["kernel"])
    np.testing.assert_allclose(levels[i], stages[name] @ q["kernel"] + q["bias"], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("name", ["fpn", "vt_fpn"])
def test_detectron2_init_scheme(name):
  params = _variables(name, init_scheme="detectron2")["params"]  # a (1, 32, 32, 3) init
  # c2_xavier_fill: uniform, variance 1/fan_in -> bound sqrt(3 / fan_in).
  lateral = (params["fpn"]["lateral2"]["kernel"] if name == "fpn"
             else params["fpn"]["projector2"]["query"]["kernel"])
  bound = np.sqrt(3.0 / np.prod(lateral.shape[:-1]))
  assert np.abs(lateral).max() <= bound and np.abs(lateral).max() > 0.8 * bound
  # c2_msra_fill predictor: He normal over the fan-out (11 classes x 1x1).
  pred = np.asarray(params["head"]["predictor"]["kernel"])
  assert pred.std() == pytest.approx(np.sqrt(2.0 / 11), rel=0.15)
  default = _variables(name)["params"]
  # The first form: LeCun normal predictor (variance 1/fan_in, 16 channels).
  assert np.asarray(default["head"]["predictor"]["kernel"]).std() == pytest.approx(
      np.sqrt(1.0 / 16), rel=0.15)
  with pytest.raises(ValueError, match="model.init_scheme='xavier'"):
    models.create_model(_tiny(name, init_scheme="xavier"))
