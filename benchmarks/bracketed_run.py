r"""One bracketed speed run: PyTorch, then vt_jax's train steps, then PyTorch again, summarised.

  python benchmarks/bracketed_run.py --torch_python=/path/to/torch-venv/bin/python
  python benchmarks/bracketed_run.py --torch_python=... --train_step_args="--quick" --single_conv

The README's speed rows are runs of this procedure: torchvision's ResNet-18 and ResNet-50
train steps (`torch_train_step.py`, default and channels_last memory format; the
channels_last runs also time each stage alone with --breakdown), then `train_step.py --json`
(ResNet-18, VT-R18, ResNet-50, VT-R50 unless --train_step_args names other configs), then
the four PyTorch runs again: the machine's drift during the run shows as the spread between
the two PyTorch figures, and each vt_jax / PyTorch ratio is given against both. With
--single_conv, `single_conv.py` times the 3x3 convolution products in both frameworks too.

Every command's output goes to --out (one log per command, `summary.json` at the end); the
summary printed last is one row per model and the speed targets of docs/performance.md
("Targets"), each marked met or not. PyTorch runs from its own venv
(--torch_python: torch, torchvision and absl-py; never vt_jax dependencies). Run it with
nothing else on the machine: the figures are wall-clock.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import subprocess
import sys
import time

from absl import app
from absl import flags

_TORCH_PYTHON = flags.DEFINE_string("torch_python", None, "a Python with torch, torchvision "
                                    "and absl-py (a separate venv); required")
_JAX_PYTHON = flags.DEFINE_string("jax_python", sys.executable, "the Python that runs "
                                  "vt_jax's scripts (default: this one)")
_OUT = flags.DEFINE_string("out", None, "folder for the logs and summary.json (default: "
                           "bracketed_runs/UTC-TIMESTAMP under the current folder)")
_TRAIN_STEP_ARGS = flags.DEFINE_string("train_step_args", "", "extra arguments for "
                                       "train_step.py (it always gets --json)")
_SINGLE_CONV = flags.DEFINE_bool("single_conv", False, "also time the 3x3 convolution "
                                 "products in both frameworks (single_conv.py)")

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_RUNS = [("resnet18", False), ("resnet18", True), ("resnet50", False), ("resnet50", True)]
# The speed targets (docs/performance.md, "Targets"): a VT-ResNet's speed-up
# over its ResNet as a share of the bound the same run measures, its VT modules' share of
# the matmul peak alone (the paper's MACs), and vt_jax's ResNet against PyTorch's
# channels_last form (against both PyTorch runs).
TARGET_OF_BOUND = 0.97
TARGET_VT_OF_PEAK = 0.50
TARGET_VS_CHANNELS_LAST = {"resnet18": 1.0}


class StepFailed(Exception):
  """A command of the run failed: its message names the command and its log."""


def run_logged(name: str, cmd: list[str], out_dir: str, echo: bool = False) -> str:
  """Runs cmd, its stdout and stderr into OUT/NAME.log (and to the console with echo);
  returns its stdout."""
  log_path = os.path.join(out_dir, f"{name}.log")
  stdout = []
  with open(log_path, "w") as log:
    log.write("$ " + shlex.join(cmd) + "\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=os.path.dirname(HERE))
    try:
      for line in proc.stdout:
        log.write(line)
        log.flush()
        stdout.append(line)
        if echo and not line.startswith("{"):  # its JSON is in the log and the summary
          print("    " + line, end="", flush=True)
      proc.wait()
    except BaseException:  # interrupted (or a write failed): no benchmark left running alone
      proc.kill()
      proc.wait()
      raise
  if proc.returncode:
    tail = "".join(stdout[-15:])
    raise StepFailed(f"{name} failed (exit {proc.returncode}): {shlex.join(cmd)}\n"
                     f"its last lines ({log_path} has all):\n{tail}")
  return "".join(stdout)


def last_json(text: str, name: str) -> dict:
  lines = [l for l in text.strip().splitlines() if l.startswith("{")]
  if not lines:
    raise StepFailed(f"{name} printed no JSON line")
  return json.loads(lines[-1])


def torch_key(model: str, channels_last: bool) -> str:
  return f"{model}/{'channels_last' if channels_last else 'default'}"


def torch_round(out_dir: str, label: str, clock) -> dict:
  """The four PyTorch runs: {"resnet18/default": result, ...}."""
  results = {}
  for model, channels_last in TORCH_RUNS:
    key = torch_key(model, channels_last)
    clock(f"PyTorch {label}: {key}")
    cmd = [_TORCH_PYTHON.value, os.path.join(HERE, "torch_train_step.py"), f"--model={model}"]
    if channels_last:
      cmd += ["--channels_last", "--breakdown"]
    name = f"torch_{label}_{key.replace('/', '_')}"
    results[key] = last_json(run_logged(name, cmd, out_dir), name)
    print(f"    {results[key]['images_per_sec']:.2f} img/s", flush=True)
  return results


def summarize(before: dict, after: dict, jax_result: dict) -> dict:
  """Rows per vt_jax run and the targets, from the runs' JSON (no timing here)."""
  rows, targets = [], []
  for run in jax_result["runs"]:
    model, ips = run["model"], run["images_per_sec"]
    row = dict(model=model, images_per_sec=ips, mfu=run["mfu"])
    for form in ("default", "channels_last"):
      key = f"{model}/{form}"
      if key in before and key in after:
        torch_ips = sorted([before[key]["images_per_sec"], after[key]["images_per_sec"]])
        row[f"pytorch_{form}"] = torch_ips
        # Against the faster PyTorch run first: the range is [worst, best] for vt_jax.
        row[f"vs_pytorch_{form}"] = [round(ips / torch_ips[1], 3), round(ips / torch_ips[0], 3)]
    for field in ("vt_speedup_bound", "of_vt_speedup_bound", "vt_modules_in_step_s",
                  "vt_modules_in_step_s_for_target"):
      if field in run:
        row[field] = run[field]
    vt_stage = run.get("stages", {}).get("stage5") if "of_vt_speedup_bound" in run else None
    if vt_stage:
      row["vt_modules_alone_s"] = vt_stage["seconds"]
      row["vt_modules_alone_of_peak"] = vt_stage["of_peak"]
    rows.append(row)
    if "of_vt_speedup_bound" in run:
      targets.append(dict(what=f"{model} / its ResNet, share of vt_speedup_bound",
                          value=run["of_vt_speedup_bound"], target=TARGET_OF_BOUND,
                          met=run["of_vt_speedup_bound"] >= TARGET_OF_BOUND))
      if vt_stage:
        targets.append(dict(what=f"{model}'s VT modules alone, share of the matmul peak",
                            value=vt_stage["of_peak"], target=TARGET_VT_OF_PEAK,
                            met=vt_stage["of_peak"] >= TARGET_VT_OF_PEAK))
    if model in TARGET_VS_CHANNELS_LAST and "vs_pytorch_channels_last" in row:
      low, high = row["vs_pytorch_channels_last"]
      targets.append(dict(what=f"{model} / PyTorch channels_last (before and after)",
                          value=[low, high], target=TARGET_VS_CHANNELS_LAST[model],
                          met=low >= TARGET_VS_CHANNELS_LAST[model]))
  return dict(peak_flops=jax_result.get("peak_flops"), rows=rows, targets=targets)


def print_summary(summary: dict) -> None:
  def span(pair):
    return f"{pair[0]:.2f}-{pair[1]:.2f}" if pair[0] != pair[1] else f"{pair[0]:.2f}"

  print(f"\nsummary (matmul peak {summary['peak_flops'] / 1e9:.0f} GFLOP/s):")
  print(f"  {'':<10} {'':>7} {'':>6}  {'PyTorch default':>28}  {'PyTorch channels_last':>28}  "
        "VT speed-up: the bound (ResNet rows),")
  print(f"  {'model':<10} {'img/s':>7} {'MFU':>6}  {'img/s':>16} {'vt_jax/it':>11}  "
        f"{'img/s':>16} {'vt_jax/it':>11}  its share, VT modules alone (VT rows)")
  for r in summary["rows"]:
    cols = []
    for form in ("default", "channels_last"):
      if f"pytorch_{form}" in r:
        cols.append(f"{span(r[f'pytorch_{form}']):>16} {span(r[f'vs_pytorch_{form}']) + 'x':>11}")
      else:
        cols.append(f"{'':>16} {'':>11}")
    vt = f"bound {r['vt_speedup_bound']:.2f}x" if "vt_speedup_bound" in r else ""
    if "of_vt_speedup_bound" in r:
      vt = f"{r['of_vt_speedup_bound']:.2f} of the bound"
      if "vt_modules_alone_of_peak" in r:
        vt += (f"; modules alone {r['vt_modules_alone_s']:.3f} s = "
               f"{r['vt_modules_alone_of_peak']:.0%} of the peak")
    print(f"  {r['model']:<10} {r['images_per_sec']:>7.2f} {r['mfu']:>6.1%}  "
          + "  ".join(cols) + f"  {vt}")
  print("targets:")
  for t in summary["targets"]:
    value = span(t["value"]) if isinstance(t["value"], list) else f"{t['value']:.2f}"
    print(f"  {'met    ' if t['met'] else 'not met'}  {t['what']}: {value} "
          f"(target >= {t['target']:.2f})")


def main(argv):
  del argv
  venv_hint = ("make a venv with them (python3 -m venv DIR && DIR/bin/pip install torch "
               "torchvision absl-py) and pass --torch_python=DIR/bin/python")
  if not _TORCH_PYTHON.value:
    sys.exit("ERROR: --torch_python is required: the python of a venv with torch, "
             f"torchvision and absl-py; {venv_hint}")
  out_dir = _OUT.value or os.path.join(
      "bracketed_runs", datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S"))
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    sys.exit(f"ERROR: --out={out_dir}: cannot make that folder ({e.strerror}); pick a "
             "writable one")
  try:
    check = subprocess.run([_TORCH_PYTHON.value, "-c", "import torch, torchvision, absl"],
                           capture_output=True, text=True, check=False)
    problem = check.stderr.strip().splitlines()[-1:] if check.returncode else None
  except OSError as e:
    problem = [e.strerror]
  if problem is not None:
    sys.exit(f"ERROR: --torch_python={_TORCH_PYTHON.value} cannot import torch, torchvision "
             f"and absl-py ({': '.join(problem) or 'exit status ' + str(check.returncode)}); "
             f"{venv_hint}")
  start = time.perf_counter()

  def clock(what: str) -> None:
    print(f"[{(time.perf_counter() - start) / 60:5.1f} min] {what}", flush=True)

  began = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  try:
    before = torch_round(out_dir, "before", clock)
    if _SINGLE_CONV.value:
      for framework, python in (("torch", _TORCH_PYTHON.value), ("jax", _JAX_PYTHON.value)):
        clock(f"single_conv.py, {framework}")
        run_logged(f"single_conv_{framework}", [python, os.path.join(HERE, "single_conv.py"),
                                                f"--framework={framework}"], out_dir, echo=True)
    clock("vt_jax: train_step.py --json " + _TRAIN_STEP_ARGS.value)
    jax_result = last_json(run_logged(
        "train_step", [_JAX_PYTHON.value, os.path.join(HERE, "train_step.py"), "--json",
                       *shlex.split(_TRAIN_STEP_ARGS.value)], out_dir, echo=True), "train_step")
    after = torch_round(out_dir, "after", clock)
  except StepFailed as e:
    print(f"\nERROR: {e}", file=sys.stderr)
    sys.exit(1)
  except OSError as e:  # a log could not be written, e.g. a full disk
    print(f"\nERROR: writing to {out_dir}: {e.strerror}; the logs so far are there",
          file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    print(f"\ninterrupted: the logs so far are in {out_dir}", file=sys.stderr)
    sys.exit(130)
  summary = summarize(before, after, jax_result)
  ended = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  summary.update(began=began, ended=ended, pytorch_before=before, pytorch_after=after,
                 train_step_args=_TRAIN_STEP_ARGS.value)
  try:
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=1)
    unsaved = None
  except OSError as e:  # the run's figures are still printed below
    unsaved = e.strerror
  clock(f"done ({began} to {ended}); logs " + ("and summary.json " if not unsaved else "")
        + f"in {out_dir}")
  print_summary(summary)
  if unsaved:
    sys.exit(f"ERROR: writing {os.path.join(out_dir, 'summary.json')}: {unsaved} (the summary "
             "above is the run's; the JSON lines of each run are in its log)")


if __name__ == "__main__":
  app.run(main)
