"""checkpoint.load_model / load_variables and vt_jax.analyze on a tiny trained run of the
bundled digit_scenes (32 px, 2 steps)."""

import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vt_jax import analyze
from vt_jax.config_lib import files
from vt_jax.train import checkpoint as ckpt_lib


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  from vt_jax.train import loop  # pylint: disable=g-import-not-at-top
  config = files.load("configs/ablations.py:width=2,canvas=32,tokens=4")
  config.update(num_train_steps=2, ema_decay=0.5, eval_batch_size=250)
  config.checkpoint.async_save = False
  config.mesh.data = 1
  workdir = str(tmp_path_factory.mktemp("tiny") / "run")
  loop.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  return workdir


def test_load_model_gives_ema_or_raw_weights_of_the_newest_checkpoint(tiny_run):
  manager = ocp.CheckpointManager(ckpt_lib.checkpoint_dir(tiny_run),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  saved = manager.restore(2, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  ema = ckpt_lib.load_model(tiny_run)
  assert (ema.step, ema.weights) == (2, "ema")
  assert ema.config.model.vt.tokens == 4
  chex.assert_trees_all_close(ema.variables["params"], saved["ema_params"])
  chex.assert_trees_all_close(ema.variables["batch_stats"], saved["ema_batch_stats"])
  config, model, raw = ckpt_lib.load_variables(os.path.join(tiny_run, "checkpoints", "2"),
                                               ema=False)
  chex.assert_trees_all_close(raw["params"], saved["params"])
  gaps = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), raw["params"],
                                      ema.variables["params"]))
  assert max(gaps) > 1e-4  # EMA 0.5 over 2 steps: not the raw weights
  images = np.zeros((1, 32, 32, 3), np.float32)
  assert model.apply(raw, images, train=False).shape == (1, config.model.num_classes)


def test_load_model_errors_name_what_is_missing(tiny_run, tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    ckpt_lib.load_model(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="config.json does not exist"):
    ckpt_lib.load_model(str(tmp_path))
  (tmp_path / "config.json").write_text(open(os.path.join(tiny_run, "config.json")).read())
  with pytest.raises(ckpt_lib.CheckpointError, match="saved no checkpoint yet"):
    ckpt_lib.load_model(str(tmp_path))
  with pytest.raises(ckpt_lib.CheckpointError, match=r"no checkpoint for step 7 .*\[2\]"):
    ckpt_lib.load_model(tiny_run, step=7)


def test_analyze_writes_pictures_and_figures(tiny_run, tmp_path):
  out = str(tmp_path / "analysis")
  result = analyze.analyze(tiny_run, out, num_images=2)
  names = sorted(os.listdir(out))
  assert names == ["attention_stats.json", "image0_stage5_vt1.png", "image0_stage5_vt2.png",
                   "image1_stage5_vt1.png", "image1_stage5_vt2.png"]
  with open(os.path.join(out, "image0_stage5_vt1.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(os.path.join(out, "attention_stats.json")) as f:
    stats = json.load(f)
  assert stats == json.loads(json.dumps(result))
  assert stats["masks"] and stats["weights"] == "ema" and stats["split"] == "test"
  for module in ("stage5/vt1", "stage5/vt2"):
    entry = stats["modules"][module]
    assert entry["pixels"] == 64 and entry["uniform_entropy"] == pytest.approx(np.log(64))
    assert len(entry["entropy_per_token"]) == 4 and entry["entropy"] <= np.log(64) + 1e-6
    assert entry["foreground_ratio"] > 0 and len(entry["foreground_ratio_per_token"]) == 4
  with pytest.raises(Exception, match="--split='validation'"):
    analyze.analyze(tiny_run, out, split="validation")


def test_analyze_cli_console_shows_no_library_info_lines(tiny_run, tmp_path):
  """`python -m vt_jax.analyze` prints what `python -m vt_jax.main` would: vt_jax's own lines
  and the libraries' warnings, no orbax/absl INFO lines, no TensorFlow start-up lines."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  env.update(XLA_FLAGS="--xla_force_host_platform_device_count=1")
  proc = subprocess.run(
      [sys.executable, "-m", "vt_jax.analyze", f"--workdir={tiny_run}", "--num_images=1",
       f"--out={tmp_path / 'out'}"], cwd=root, env=env, capture_output=True, text=True,
      timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "stage5/vt1" in proc.stdout  # the table
  lines = proc.stderr.splitlines()
  own = {name for _, _, names in os.walk(os.path.join(root, "vt_jax")) for name in names}
  info = [l.split("] ")[0].split()[-1].split(":")[0] for l in lines
          if l.startswith("I") and "] " in l]
  assert set(info) <= own, lines  # INFO lines from vt_jax's modules only
  assert not [l for l in lines if "orbax" in l or "[process=0]" in l or "oneDNN" in l
              or "absl::InitializeLog" in l or "dtype` is deprecated" in l], lines
  assert len(lines) <= 6, "\n".join(lines)
