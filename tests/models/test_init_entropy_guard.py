"""Guard: every shipped VT config's tokens read broadly at initialisation.

A VT module whose spatial attention is near one-hot from the first step passes almost no
gradient through its softmax and stays that way (the literal Eq. 2 recurrent tokenizer did:
entropy ~0 against log(HW)). Each shipped config is initialised (seed 0) and applied in train
mode to random normal images; every VT module's mean entropy must reach half of log(HW).
Configs run at their data's image size, at most 224 px (the paper's classification size;
the segmentation configs' 473-512 px crops would only slow CI). At 64 px, with 4x4 maps, the
VT-R50/R101 modules read fewer, larger-valued pixels and the entropy no longer tells apart the
forms that saturate at 224 px from those that do not.
"""

import math
import os
import subprocess
import sys
import json

import pytest

from vt_jax import attention
from vt_jax.config_lib import files

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHIPPED = [f"configs/vt_r{d}.py{v}" for d in (18, 34, 50, 101) for v in ("", ":v1")] + [
    "configs/vt_fpn_r50_lip.py", "configs/vt_fpn_r50_lip.py:depth=101",
    "configs/vt_fpn_r50_cocostuff.py", "configs/quickstart.py",
    "configs/quickstart_seg.py:model=vt_fpn", "configs/ablations.py", "configs/digit_scenes.py"]


def low_entropy_modules(spec: str, **vt_overrides) -> dict:
  """{module: (entropy, log(HW))} of the modules below half of log(HW) at initialisation."""
  config = files.load(os.path.join(ROOT, spec))
  config.model.vt.update(vt_overrides)
  resolution = min(config.data.image_size, 224)
  result = attention.init_entropy(config.model, resolution, seeds=(0,), batch=2)
  assert result, f"{spec}: no VT module found"
  return {name: (e["entropy"][0], e["uniform_entropy"]) for name, e in result.items()
          if e["entropy"][0] < 0.5 * e["uniform_entropy"]}


@pytest.mark.slow
@pytest.mark.parametrize("spec", SHIPPED)
def test_shipped_vt_configs_attend_broadly_at_initialisation(spec):
  assert low_entropy_modules(spec) == {}


@pytest.mark.slow
def test_guard_fails_for_the_literal_equation_on_vt_r50():
  low = low_entropy_modules("configs/vt_r50.py", recurrent_logits="paper")
  assert set(low) == {"stage5/vt2", "stage5/vt3"}  # the two recurrent modules
  # 224 px, of 5.28: 0.000-0.007 with flax's kernel init, 0.002-0.08 with PyTorch's (the
  # default, model.vt.kernel_init): each token reads about one pixel either way.
  assert all(ent < 0.5 for ent, _ in low.values()), low


@pytest.mark.slow
def test_guard_fails_for_vt_r101_without_zero_initialised_residual_branches():
  # VT-R101's stage-4 map, the sum of 23 residual blocks, saturates every module (the filter
  # tokenizer included) unless the residual branches start at zero (its preset's choice).
  # Measured with flax's kernel init, as the preset was chosen; with PyTorch's (the default
  # since) the three modules start at 3.0-4.0 of 5.28 without it, above the guard's half.
  config = files.load(os.path.join(ROOT, "configs/vt_r101.py"))
  assert config.model.zero_init_residual
  config.model.zero_init_residual = False
  config.model.vt.kernel_init = "flax"
  result = attention.init_entropy(config.model, 224, seeds=(0,), batch=1)  # 1: CI time
  assert {name for name, e in result.items()
          if e["entropy"][0] < 0.5 * e["uniform_entropy"]} == {
              "stage5/vt1", "stage5/vt2", "stage5/vt3"}


def test_analyze_init_prints_and_writes_the_entropy_table(tmp_path):
  spec = "configs/ablations.py:width=2,canvas=32,tokens=4,recurrent_logits=paper"
  proc = subprocess.run(
      [sys.executable, "-m", "vt_jax.analyze", "--init", f"--config={spec}", "--seeds=0,3",
       "--batch=1", f"--out={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(tmp_path / "init_entropy.json") as f:
    result = json.load(f)
  assert result["resolution"] == [32, 32] and result["seeds"] == [0, 3]
  modules = result["modules"]
  assert list(modules) == ["stage5/vt1", "stage5/vt2"]
  for name, e in modules.items():
    assert e["uniform_entropy"] == pytest.approx(math.log(8 * 8))  # stage 4 of 32 px: 8x8
    assert len(e["entropy"]) == 2 and all(0 <= x <= e["uniform_entropy"] + 1e-6
                                          for x in e["entropy"])
    assert e["min_entropy"][0] <= e["entropy"][0] and 0 < e["max_weight"][0] <= 1
    assert name in proc.stdout
  # The table holds the JSON's numbers.
  assert f"{modules['stage5/vt1']['entropy'][0]:.3f}" in proc.stdout


def test_analyze_init_errors_name_the_flag(tmp_path):
  run = lambda *args: subprocess.run([sys.executable, "-m", "vt_jax.analyze", *args], cwd=ROOT,
                                     capture_output=True, text=True, timeout=300)
  proc = run("--init")
  assert proc.returncode != 0 and "--init needs --config" in proc.stderr
  proc = run("--init", "--config=configs/resnet18.py")
  assert proc.returncode != 0 and "has no visual tokens" in proc.stderr
  proc = run("--init", "--config=configs/nope.py")
  assert proc.returncode == 1 and "no file" in proc.stderr
