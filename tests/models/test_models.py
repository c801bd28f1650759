"""Whole models: shapes, gradients, dtypes, config errors."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vt_jax import models
from vt_jax.config_lib import files as config_files
from vt_jax.config_lib import models as model_configs

VT_R18 = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "configs", "vt_r18.py")
DEPTHS = (18, 34, 50, 101)
ALL = [("resnet", d, None) for d in DEPTHS] + [("vt_resnet", d, v) for d in DEPTHS
                                               for v in ("iccv", "v1")]


def config(name, depth, variant, **kw):
  if name == "resnet":
    return model_configs.resnet(depth, **kw)
  return model_configs.vt_resnet(depth, variant, **kw)


@pytest.mark.parametrize("name,depth,variant", ALL)
def test_output_shape_at_224(name, depth, variant):
  model = models.create_model(config(name, depth, variant))
  images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
  out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, images)
  assert out.shape == (2, 1000) and out.dtype == jnp.float32


@pytest.mark.parametrize("name,depth,variant", [a for a in ALL if a[1] in (18, 50)])
def test_runs_at_32px_with_small_image_stem(name, depth, variant):
  cfg = config(name, depth, variant, num_classes=10, small_image_stem=True, width=8,
               zero_init_head=False)
  if name == "vt_resnet":
    cfg.vt.update(token_channels=32, heads=4, projector_heads=4, tokenizer_heads=4)
  model = models.create_model(cfg)
  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  variables = model.init(jax.random.key(0), images)
  logits = model.apply(variables, images)
  assert logits.shape == (2, 10)
  assert np.isfinite(np.asarray(logits)).all()
  # Different images give different logits (the network is not degenerate).
  assert float(jnp.abs(logits[0] - logits[1]).max()) > 1e-6


def test_standard_stem_at_32px_shape():
  model = models.create_model(model_configs.vt_resnet(18, num_classes=10))
  images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
  assert jax.eval_shape(model.apply, variables, images).shape == (1, 10)


def tiny_vt(variant="iccv", **kw):
  # A random head: these tests compare logits, which a zero head makes all equal.
  kw.setdefault("zero_init_head", False)
  cfg = model_configs.vt_resnet(18, variant, num_classes=10, small_image_stem=True, width=8, **kw)
  cfg.vt.update(token_channels=32, heads=4, projector_heads=4, tokenizer_heads=4)
  return cfg


@pytest.mark.parametrize("variant", ["iccv", "v1"])
def test_gradients_are_finite_and_reach_every_parameter(variant):
  cfg = tiny_vt(variant, dropout=0.2, stochastic_depth_survival=0.8)
  model = models.create_model(cfg)
  images = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  labels = jnp.arange(4) % 10
  variables = model.init(jax.random.key(0), images)

  def loss(params):
    logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                            images, train=True, rngs={"dropout": jax.random.key(2)},
                            mutable=["batch_stats"])
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])

  grads = jax.grad(loss)(variables["params"])
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  for path, g in leaves:
    assert np.isfinite(np.asarray(g)).all(), path
  # No dead weights (e.g. a projector whose output nothing reads).
  dead = [jax.tree_util.keystr(p) for p, g in leaves if not np.any(np.asarray(g))]
  assert not dead, f"parameters with zero gradient: {dead}"


def test_train_mode_updates_batch_stats_and_is_stochastic():
  cfg = tiny_vt(dropout=0.5)
  model = models.create_model(cfg)
  images = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  variables = model.init(jax.random.key(0), images)
  out1, state = model.apply(variables, images, train=True, rngs={"dropout": jax.random.key(1)},
                            mutable=["batch_stats"])
  out2, _ = model.apply(variables, images, train=True, rngs={"dropout": jax.random.key(2)},
                        mutable=["batch_stats"])
  assert float(jnp.abs(out1 - out2).max()) > 1e-4  # dropout differs by key
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)),
                                   variables["batch_stats"], state["batch_stats"])
  assert all(jax.tree_util.tree_leaves(changed))


def test_bfloat16_compute_keeps_float32_params_and_tracks_float32():
  cfg32 = tiny_vt()
  cfg16 = tiny_vt()
  cfg16.dtype = "bfloat16"
  m32, m16 = models.create_model(cfg32), models.create_model(cfg16)
  images = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  variables = m32.init(jax.random.key(0), images)
  v16 = m16.init(jax.random.key(0), images)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(v16["params"]))
  out16 = m16.apply(variables, images)
  out32 = m32.apply(variables, images)
  assert out16.dtype == jnp.float32
  np.testing.assert_allclose(out16, out32, rtol=0.1, atol=0.1)
  assert float(jnp.abs(out16 - out32).max()) > 0  # really computed in bfloat16


def test_sown_attention_per_module():
  model = models.create_model(tiny_vt())
  images = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  variables = model.init(jax.random.key(0), images)
  _, state = model.apply(variables, images, mutable=["intermediates"])
  stage5 = state["intermediates"]["stage5"]
  assert sorted(stage5) == ["vt1", "vt2"]
  a = stage5["vt2"]["tokenizer"]["spatial_attention"][0]
  assert a.shape == (2, 4 * 4, 16)
  np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("tokenizer,interaction,projector,recurrent", [
    ("pooling", "transformer", True, True),
    ("clustering", "graphconv", True, False),
    ("filter", "none", False, True),
])
def test_ablation_configs_build_and_run(tokenizer, interaction, projector, recurrent):
  cfg = tiny_vt(vt=dict(tokenizer=tokenizer, interaction=interaction, projector=projector,
                        recurrent=recurrent))
  model = models.create_model(cfg)
  images = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  variables = model.init(jax.random.key(0), images)
  assert np.isfinite(np.asarray(model.apply(variables, images))).all()


@pytest.mark.parametrize("field,value,msg", [
    ("name", "vit", "model.name='vit'"),
    ("dtype", "float16", "model.dtype='float16'"),
    ("depth", 20, "model.depth=20"),
])
def test_bad_model_fields_name_the_field(field, value, msg):
  cfg = tiny_vt()
  cfg[field] = value
  with pytest.raises(ValueError, match=msg):
    model = models.create_model(cfg)
    model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


@pytest.mark.parametrize("field,value,msg", [
    ("tokenizer", "kmeans", "model.vt.tokenizer='kmeans'"),
    ("interaction", "mlp", "model.vt.interaction='mlp'"),
    ("variant", "V1", "model.vt.variant='V1'"),
    ("modules", 0, "model.vt.modules=0"),
    ("qk_groups", 3, "model.vt.qk_groups=3"),
])
def test_bad_vt_fields_name_the_field(field, value, msg):
  cfg = tiny_vt()
  cfg.vt[field] = value
  with pytest.raises(ValueError, match=msg):
    models.create_model(cfg).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


def test_config_variant_args():
  assert config_files.load(VT_R18).model.vt.variant == "iccv"
  v1 = config_files.load(VT_R18 + ":v1,tokens=32")
  assert v1.model.vt.variant == "v1" and v1.model.vt.tokens == 32
  assert isinstance(v1, ml_collections.ConfigDict)
  with pytest.raises(ValueError, match="unknown config arg"):
    config_files.load(VT_R18 + ":v2")


def test_config_file_errors_name_the_field(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"config.distill.teacher_config='nope.py:v1'"):
    config_files.load("nope.py:v1", "config.distill.teacher_config")
  bad = tmp_path / "bad.py"
  bad.write_text("X = 1\n")
  with pytest.raises(AttributeError, match=r"--config=.*bad.py.*defines no get_config"):
    config_files.load(str(bad))


@pytest.mark.parametrize("variant", ["iccv", "v1"])
def test_non_square_inputs(variant):
  cfg = tiny_vt(variant, vt=dict(position_encoding=True))
  model = models.create_model(cfg)
  images = jax.random.normal(jax.random.key(1), (2, 24, 40, 3))
  variables = model.init(jax.random.key(0), images)
  _, state = model.apply(variables, images, mutable=["intermediates"])
  a = state["intermediates"]["stage5"]["vt1"]["tokenizer"]["spatial_attention"][0]
  assert a.shape[1] == 6 * 10  # stride 4 with the small stem
  assert a.dtype == jnp.float32


def test_stochastic_depth_reaches_configured_survival_on_built_blocks():
  from vt_jax.models import resnet
  full = resnet.block_survivals(18, 0.9)
  assert full[-1][-1] == pytest.approx(0.9) and full[0][0] > 0.98
  vt_part = resnet.block_survivals(18, 0.9, last_stage=4)
  assert len(vt_part) == 3 and vt_part[-1][-1] == pytest.approx(0.9)
  assert all(a > b for a, b in zip(sum(vt_part, [])[:-1], sum(vt_part, [])[1:]))


def test_stochastic_depth_drops_at_the_survival_rate_and_is_identity_in_eval():
  from vt_jax.models import resnet
  sd = resnet.StochasticDepth(0.75)
  branch = jnp.ones((4000, 2, 2, 1))
  out = sd.apply({}, branch, train=True, rngs={"dropout": jax.random.key(0)})
  kept = np.asarray(out[:, 0, 0, 0] > 0)
  assert abs(kept.mean() - 0.75) < 0.03
  np.testing.assert_allclose(np.asarray(out)[kept], 1 / 0.75, rtol=1e-6)  # rescaled
  np.testing.assert_array_equal(sd.apply({}, branch, train=False), branch)


def test_bfloat16_softmax_runs_in_float32():
  cfg = tiny_vt()
  cfg.dtype = "bfloat16"
  model = models.create_model(cfg)
  images = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  variables = model.init(jax.random.key(0), images)
  _, state = model.apply(variables, images, mutable=["intermediates"])
  leaves = jax.tree_util.tree_leaves(state["intermediates"])
  assert leaves and all(x.dtype == jnp.float32 for x in leaves)


def test_vt_resnet_starts_from_uniform_predictions():
  assert model_configs.vt_resnet(18).zero_init_head  # the default for VT-ResNets
  model = models.create_model(tiny_vt(zero_init_head=True))
  images = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  variables = model.init(jax.random.key(0), images)
  np.testing.assert_array_equal(model.apply(variables, images), 0.0)  # loss = ln(num_classes)
  random_head = models.create_model(tiny_vt(zero_init_head=False))
  logits = random_head.apply(random_head.init(jax.random.key(0), images), images)
  assert float(jnp.abs(logits).max()) > 1e-3
