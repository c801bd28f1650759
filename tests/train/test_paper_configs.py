"""The paper's configs train through the same path as the quickstart.

ImageNet is replaced by `vt_jax_synthetic/clean` (vt_jax.data.testing: real
JPEGs of varied sizes, built into a temp dir) under the config's own ImageNet
preprocessing. Not tfds.testing.mock_data: it patches etils' epath, through
which orbax's background thread writes checkpoints, and redirects part of them.
"""

import json
import math
import os

import pytest

import vt_jax.data.testing  # noqa: F401  (registers vt_jax_synthetic)
from vt_jax.config_lib import files as config_files
from vt_jax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """One build of vt_jax_synthetic/clean for both parametrizations (read-only after it)."""
  return str(tmp_path_factory.mktemp("data"))


@pytest.mark.slow
@pytest.mark.parametrize("augment_device", [False, True])
def test_vt_r18_advanced_recipe_trains_and_evaluates_through_imagenet_preprocessing(
    tmp_path, data_dir, augment_device):
  """augment_device=True: the host sends uint8 crops and the train step flips and applies
  AutoAugment on the device (vt_jax.data.augment_device)."""
  config = config_files.load(os.path.join(ROOT, "configs", "vt_r18.py:recipe=advanced"))
  # The paper's recipe and model, shrunk only in size: RMSProp, EMA, AutoAugment,
  # label smoothing, dropout and stochastic depth all stay on.
  assert config.optimizer.name == "rmsprop" and config.ema_decay > 0
  assert config.data.augment == "autoaugment" and config.model.dropout > 0
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_train_steps = 3
  config.log_every_steps = 1
  config.data.image_size = 64
  config.data.eval_resize = 72
  config.data.augment_device = augment_device
  assert config.data.preprocess == "imagenet"  # Inception crop + flip / resize + centre crop
  config.data.update(name="vt_jax_synthetic/clean", train_split="train", eval_split="test",
                     data_dir=data_dir)
  workdir = tmp_path / "run"
  result = loop.train_and_evaluate(config, str(workdir))
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  train = [r for r in records if r["split"] == "train"]
  assert [r["step"] for r in train] == [1, 2, 3]
  assert all(math.isfinite(r["loss"]) for r in train)
  assert train[0]["lr"] < train[-1]["lr"]  # linear warm-up of the advanced recipe
  evals = [r for r in records if r["split"] == "eval"]
  assert evals and "ema_top1" in evals[-1] and 0.0 <= result["top1"] <= 1.0
