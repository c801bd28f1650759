"""MAC / parameter accounting against torchvision and the paper."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from vt_jax import analytic, models, profile
from vt_jax.config_lib import models as model_configs

TORCHVISION = {  # params, MACs at 224x224, 1000 classes
    18: (11_689_512, 1_814_073_344),
    34: (21_797_672, 3_663_761_408),
    50: (25_557_032, 4_089_184_256),
    101: (44_549_160, 7_801_405_440),
}
TABLE8 = {18: (1.569e9, 11.7e6), 34: (3.236e9, 19.2e6), 50: (3.412e9, 21.4e6),
          101: (7.129e9, 41.5e6)}
MIN_STAGE5_REDUCTION = {18: 2.0, 34: 2.0, 50: 5.0, 101: 5.0}


@pytest.mark.parametrize("depth", sorted(TORCHVISION))
def test_resnet_profile_equals_torchvision(depth):
  result = profile.profile(model_configs.resnet(depth))
  assert (result["params"], result["macs"]) == TORCHVISION[depth]


@pytest.mark.parametrize("variant", ["iccv", "v1"])
@pytest.mark.parametrize("depth", sorted(TABLE8))
def test_vt_resnet_lands_on_table8(depth, variant):
  vt = profile.profile(model_configs.vt_resnet(depth, variant))
  base = profile.profile(model_configs.resnet(depth))
  macs, params = TABLE8[depth]
  assert abs(vt["macs"] / macs - 1) <= 0.03, vt["macs"]
  assert abs(vt["params"] / params - 1) <= 0.08, vt["params"]
  ratio = base["stages"]["stage5"]["macs"] / vt["stages"]["stage5"]["macs"]
  assert ratio >= MIN_STAGE5_REDUCTION[depth], ratio
  # Stages 1-4 are the ResNet's own.
  for s in ("stage1", "stage2", "stage3", "stage4"):
    assert vt["stages"][s] == base["stages"][s]


def _configs():
  small = dict(num_classes=10, small_image_stem=True, width=16)
  yield model_configs.resnet(34), 224
  yield model_configs.vt_resnet(50, "v1"), 224
  yield model_configs.vt_resnet(18, "iccv", vt=dict(position_encoding=True, value_groups=4,
                                                    steer_groups=2, ffn_groups=2)), 160
  yield model_configs.vt_resnet(18, "v1", **small, vt=dict(token_channels=64, tokens=8)), 32
  yield model_configs.vt_resnet(18, vt=dict(channels=96, modules=3)), 224
  yield model_configs.vt_resnet(18, "v1", vt=dict(tokenizer="clustering", modules=1)), 224
  for tokenizer, interaction, rec in [("pooling", "graphconv", True),
                                      ("clustering", "none", False)]:
    yield model_configs.vt_resnet(18, vt=dict(tokenizer=tokenizer, interaction=interaction,
                                              recurrent=rec, projector=False)), 224


@pytest.mark.parametrize("cfg,res", list(_configs()))
def test_traced_and_analytic_counts_agree_exactly(cfg, res):
  traced = profile.profile(cfg, res)
  closed = analytic.count(cfg, res)
  assert traced["stages"] == closed["stages"]


@pytest.mark.parametrize("cfg", [model_configs.resnet(18), model_configs.vt_resnet(18),
                                 model_configs.vt_resnet(50, "v1")])
def test_xla_compiled_cost_agrees_with_traced_macs(cfg):
  """XLA counts 2 FLOPs per MAC, skips conv taps in zero padding, and adds the
  elementwise ops (BN, ReLU, softmax): its FLOPs/2 must lie between our
  padding-free MACs and 3% above them."""
  model = models.create_model(cfg)
  variables = profile.abstract_variables(model, 224)
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  cost = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, images).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  macs = sum(profile.count_macs(model, variables, 224, count_padding=False).values())
  assert 1.0 <= cost["flops"] / 2 / macs <= 1.03


def test_profile_cli_json_is_one_object_on_the_last_line():
  out = subprocess.run([sys.executable, "-m", "vt_jax.profile", "--config=configs/resnet18.py",
                        "--json"], capture_output=True, text=True, check=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["macs"] == TORCHVISION[18][1] and result["params"] == TORCHVISION[18][0]
  assert sorted(result["stages"]) == ["head", "stage1", "stage2", "stage3", "stage4", "stage5"]
  assert result["resolution"] == 224 and result["model"] == "resnet18"
  assert sum(s["macs"] for s in result["stages"].values()) == result["macs"]


def test_paper_table_rows_match_profile():
  table = profile.paper_table()
  rows = {r.split("|")[1].strip(): r for r in table.splitlines()[2:]}
  assert "| 1.814 | 1.814 | +0.0% |" in rows["resnet18"]
  vt18 = profile.profile(model_configs.vt_resnet(18))
  assert f"| {vt18['macs'] / 1e9:.3f} |" in rows["vt_r18"]
  assert set(rows) >= {"vt_r50:tokens=16", "vt_r101:v1", "resnet101"}


def test_mac_walk_counts_cond_and_scan_bodies():
  import flax.linen as nn

  class Toy(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      with jax.named_scope("stage5"):
        w = jnp.ones((8, 8))
        y = jax.lax.cond(x.sum() > 0, lambda v: v @ w @ w, lambda v: v @ w, x)  # max: 2 matmuls
        y, _ = jax.lax.scan(lambda c, _: (c @ w, None), y, None, length=3)
      return y

  closed = jax.make_jaxpr(lambda x: Toy().apply({}, x))(jnp.ones((1, 8)))
  from collections import defaultdict
  totals = defaultdict(int)
  profile._walk(closed.jaxpr, "", totals)  # pylint: disable=protected-access
  assert totals["stage5"] == (2 + 3) * 64
