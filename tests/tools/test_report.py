"""vt_jax.report on fake workdirs: grouping over seeds, mean ± std, MACs, minutes."""

import json
import os
import subprocess
import sys

import pytest

from vt_jax import profile
from vt_jax import report
from vt_jax.config_lib import files


def _workdir(root, name, arg, top1s, rates=(100.0, 50.0), status="done"):
  config = files.load(f"configs/ablations.py:{arg}")
  d = root / name
  d.mkdir(parents=True)
  (d / "config.json").write_text(config.to_json_best_effort())
  records = [{"step": 31, "split": "train", "images_per_sec": rates[0], "loss": 2.0},
             {"step": 62, "split": "train", "images_per_sec": rates[1], "loss": 1.0}]
  records += [{"step": 31 * (i + 1), "split": "eval", "top1": t, "top5": 0.9}
              for i, t in enumerate(top1s)]
  (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  if status:
    (d / "sweep_run.json").write_text(json.dumps({"status": status}))
  return config


def test_report_on_fake_workdirs_gives_the_right_table(tmp_path):
  base = _workdir(tmp_path, "seed=0,tokenizer=pooling", "tokenizer=pooling,seed=0", [0.3, 0.5])
  _workdir(tmp_path, "seed=1,tokenizer=pooling", "tokenizer=pooling,seed=1", [0.7],
           rates=(200.0, 200.0))
  resnet = _workdir(tmp_path, "seed=0,model=resnet", "model=resnet", [0.25])
  _workdir(tmp_path, "seed=2,tokenizer=pooling", "tokenizer=pooling,seed=2", [0.1],
           status="running")  # unfinished: listed, not averaged
  result = subprocess.run([sys.executable, "-m", "vt_jax.report", str(tmp_path)],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  vt_macs = profile.profile(base.model, 64)["macs"] / 1e6
  rn = profile.profile(resnet.model, 64)
  # top1: the last eval record of each run, 0.5 and 0.7 -> 60.0 ± 14.1 (sample std);
  # minutes: 31*64/100 + 31*64/50 s = 59.52 s and 2 * 31*64/200 s = 19.84 s: 0.66 ± 0.47.
  lines = result.stdout.split("\n")
  assert lines[0] == "| variant | runs | top1 (%) | top5 (%) | MMACs | params (k) | train min |"
  assert lines[2] == (f"| model=resnet | 1 | 25.0 | 90.0 | {rn['macs'] / 1e6:.2f} | "
                      f"{rn['params'] / 1e3:.1f} | 1.0 |")
  row = [l for l in lines if l.startswith("| tokenizer=pooling |")][0]
  assert row.startswith(f"| tokenizer=pooling | 2 | 60.0 ± 14.1 | 90.0 ± 0.0 | {vt_macs:.2f} |")
  assert row.endswith("| 0.7 ± 0.5 |")  # 0.992 and 0.331 min
  assert "seed=2,tokenizer=pooling: sweep status 'running'" in result.stdout
  assert os.path.exists(tmp_path / "report.md")
  with open(tmp_path / "accuracy_vs_macs.png", "rb") as f:
    assert f.read(4) == b"\x89PNG"


def test_runs_grouped_together_must_share_their_config(tmp_path):
  _workdir(tmp_path, "seed=0,x", "tokens=16", [0.3])
  _workdir(tmp_path, "seed=1,x", "tokens=32", [0.3])
  runs = [report.load_run(str(tmp_path / n)) for n in ("seed=0,x", "seed=1,x")]
  with pytest.raises(ValueError, match=r"configs differ in \['model.vt.tokens'\]"):
    report.summarise(runs)


def test_group_name_drops_only_the_seed():
  assert report.group_name("/r/seed=3,tokenizer=pooling") == "tokenizer=pooling"
  assert report.group_name("/r/tokens=32,seed=10") == "tokens=32"
  assert report.group_name("/r/seed=0") == "baseline"
  assert report.group_name("/r/myrun") == "myrun"
