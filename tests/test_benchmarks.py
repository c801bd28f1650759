"""benchmarks/train_step.py runs without TensorFlow or clu and prints its JSON contract;
benchmarks/op_profile.py attributes a step's ops to the model's parts; single_conv.py times
the products it names."""

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The scripts on one CPU device, as a CPU user runs them (XLA_FLAGS without the tests' 8
# simulated devices; the script appends vt_jax's own XLA flag). Nothing here asserts on the
# device count, and 8 devices only split the batch of 8 eight ways and make every program an
# SPMD one (slower to compile and run on the CI's 2 cores).
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")

# Blocks the imports the GPU machine cannot satisfy: `import tensorflow` then raises.
_RUN_WITHOUT_TF = """
import runpy, sys
for name in ("tensorflow", "tensorflow_datasets", "clu"):
  sys.modules[name] = None
import vt_jax.models
sys.argv = ["train_step.py"] + sys.argv[1:]
runpy.run_path("benchmarks/train_step.py", run_name="__main__")
assert not any(sys.modules.get(m) for m in ("tensorflow", "clu")), "TensorFlow was imported"
"""


def test_train_step_benchmark_runs_without_tensorflow():
  """Also with --augment_device: the device augmentation needs no TensorFlow either; and the
  stage breakdown, run in this process (--nobreakdown_in_child), needs none either (the
  child-process path is run by the speed-up bound test below)."""
  out = subprocess.run(
      [sys.executable, "-c", _RUN_WITHOUT_TF, "--configs=quickstart:width=4",
       "--resolution=32", "--batch=8", "--steps=1", "--json", "--augment_device=autoaugment",
       "--nobreakdown_in_child"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()
  result = json.loads(lines[-1])
  assert set(result) == {"peak_flops", "runs"} and result["peak_flops"] > 0
  (run,) = result["runs"]
  assert set(run) == {"model", "dtype", "batch", "resolution", "images_per_sec", "mfu",
                      "augment_device", "stages"}
  assert (run["model"], run["dtype"], run["batch"], run["resolution"]) == (
      "quickstart:width=4", "float32", 8, 32)
  assert run["images_per_sec"] > 0 and run["mfu"] > 0
  aug = run["augment_device"]
  assert aug["policy"] == "autoaugment" and aug["augmented_step_s"] > 0 and aug["alone_s"] > 0
  assert abs(aug["alone_share"] - aug["alone_s"] / aug["augmented_step_s"]) < 1e-3
  assert any(line.startswith("device augmentation (autoaugment + flip") for line in lines)
  # The per-stage breakdown covers every stage of the profile, and the VT stage's token-side
  # maps are timed alone beside it.
  assert all(any(line.strip().startswith(s) for line in lines) for s in ("stage1", "stage5", "head"))
  assert any(re.match(r"\s*stage5's \d+ token-side linear maps alone", l) for l in lines)
  # The JSON carries the printed table: seconds and the share of the peak per stage, the token
  # maps' seconds on the VT stage.
  _assert_stages_as_printed(run["stages"], lines)
  assert "token_maps_s" in run["stages"]["stage5"]
  assert not any("token_maps_s" in f for name, f in run["stages"].items() if name != "stage5")


def _assert_stages_as_printed(stages: dict, lines: list[str]) -> None:
  """A run's JSON "stages" against the breakdown table it printed (seconds, "of peak")."""
  assert list(stages) == ["stage1", "stage2", "stage3", "stage4", "stage5", "head"]
  for name, figures in stages.items():
    (row,) = [l.split() for l in lines if l.split()[:1] == [name] and len(l.split()) >= 7]
    assert float(row[1]) == pytest.approx(figures["seconds"], abs=6e-4)
    assert float(row[5].rstrip("%")) == pytest.approx(100 * figures["of_peak"], abs=0.06)
    assert 0 < figures["of_peak_performed"] <= figures["of_peak"] + 1e-4


def _train_step_json(*args):
  """(stdout lines, JSON object) of benchmarks/train_step.py at 32 px, batch 8. The peak is
  given (--peak_flops: measuring it is the test above's; no figure here depends on it)."""
  out = subprocess.run(
      [sys.executable, "benchmarks/train_step.py", "--resolution=32", "--batch=8", "--quick",
       "--json", "--peak_flops=1e11", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=900, env=ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()
  return lines, json.loads(lines[-1])


def test_vt_speedup_bound_is_reported_next_to_a_vt_config():
  """ResNet-18 next to VT-R18: its train step without stage 5 bounds VT-R18's speed-up, VT-R18's
  ratio is given as a share of it, and the breakdown's chain gives the stage-alone bound.

  Two runs, so that no stage breakdown nobody reads is timed: the train steps without the
  breakdown (--nobreakdown), and ResNet-18's breakdown alone with its chain (--notrain_step
  --speedup_bound: the JSON's "bounds"), in a child process as on any CPU run."""
  lines, result = _train_step_json("--configs=resnet18,vt_r18", "--steps=1", "--nobreakdown")
  runs = {r["model"]: r for r in result["runs"]}
  bound = runs["resnet18"]["vt_speedup_bound"]
  assert bound > 1.0  # removing stage 5 removes work
  assert "vt_speedup_bound" not in runs["vt_r18"] and "of_vt_speedup_bound" not in runs["resnet18"]
  assert "vt_speedup_bound_chain" not in runs["resnet18"]  # only with --breakdown
  ratio = runs["vt_r18"]["images_per_sec"] / runs["resnet18"]["images_per_sec"]
  assert runs["vt_r18"]["of_vt_speedup_bound"] == pytest.approx(ratio / bound, abs=2e-3)
  (i,) = [i for i, l in enumerate(lines) if "even with VT modules that take no time" in l]
  assert lines[i - 1].strip().startswith("resnet18 without stage 5") and f"{bound:.2f}x" in lines[i]
  (j,) = [j for j, l in enumerate(lines) if l.strip().startswith("vt_r18:") and "of that bound" in l]
  assert f"{runs['vt_r18']['of_vt_speedup_bound']:.2f} of that bound" in lines[j]
  line = lines[j + 1]
  # What VT-R18's VT modules cost in its step (its step minus the stripped ResNet's, which is
  # the ResNet's step / the bound) and may cost for 0.97 of the bound.
  vt, r = runs["vt_r18"], runs["resnet18"]
  without_s = 8 / r["images_per_sec"] / bound
  assert vt["vt_modules_in_step_s"] == pytest.approx(8 / vt["images_per_sec"] - without_s,
                                                     abs=2e-3 * without_s + 1e-4)
  assert vt["vt_modules_in_step_s_for_target"] == pytest.approx(
      without_s * (1 / 0.97 - 1), abs=2e-3 * without_s + 1e-4)
  assert (f"its VT modules take {vt['vt_modules_in_step_s']:.3f} s of its step" in line and
          f"0.97 of the bound needs <= {vt['vt_modules_in_step_s_for_target']:.3f} s" in line)
  assert "GFLOP they perform" in line  # the share of the peak those seconds ask

  lines, result = _train_step_json("--configs=resnet18", "--notrain_step", "--speedup_bound")
  assert result["runs"] == [] and set(result["bounds"]) == {"resnet18/float32"}
  assert set(result["breakdowns"]) == {"resnet18/float32"}
  _assert_stages_as_printed(result["breakdowns"]["resnet18/float32"], lines)
  chain = result["bounds"]["resnet18/float32"]
  assert chain > 1.0  # removing stage 5 removes work
  (line,) = [l for l in lines if "(vt_speedup_bound_chain;" in l]
  assert line.strip().startswith("resnet18:") and f"{chain:.2f}x" in line


def _benchmark_module(name: str):
  """benchmarks/NAME.py imported as a module (the scripts are not in the package)."""
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  try:
    return importlib.import_module(name)
  finally:
    sys.path.pop(0)


def _train_step_module():
  return _benchmark_module("train_step")


def test_train_step_without_stage5_is_the_resnet_minus_its_last_stage():
  """The bound's model: the ResNet's fields, its parameters except stage 5's (same shapes),
  and a head on stage 4's channels."""
  train_step = _train_step_module()
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from vt_jax import models  # pylint: disable=import-outside-toplevel
  from vt_jax.config_lib import files  # pylint: disable=import-outside-toplevel

  config = files.load(os.path.join(ROOT, "configs", "resnet18.py"))
  config.model.num_classes, config.model.layers = 10, "tuned"
  full, stripped = models.create_model(config.model), train_step.without_stage5(config)
  assert (stripped.depth, stripped.layers, stripped.num_classes) == (18, "tuned", 10)
  x = jnp.ones((2, 64, 64, 3))
  full_v = jax.eval_shape(lambda: full.init(jax.random.key(0), x, False))["params"]
  params = jax.eval_shape(lambda: stripped.init(jax.random.key(0), x, False))["params"]
  full_v["backbone"].pop("stage5")
  shapes = lambda tree: jax.tree_util.tree_map(lambda a: a.shape, tree)  # noqa: E731
  assert shapes(params["backbone"]) == shapes(full_v["backbone"])
  assert params["head"]["fc"]["kernel"].shape == (256, 10)
  assert stripped.apply(stripped.init(jax.random.key(0), x, False), x, False).shape == (2, 10)


_STEP_BOUND = """
import sys
from absl import flags
sys.path.insert(0, "benchmarks")
import train_step
flags.FLAGS(["train_step.py", "--batch=32"])
resnet = dict(model="resnet50", dtype="float32", images_per_sec=32 / 6.0, vt_speedup_bound=1.2)
vt = dict(model="vt_r50", dtype="float32", images_per_sec=32 / float(sys.argv[1]))
train_step.print_step_bound(resnet, 6.0, 5.0, [resnet, vt], {"vt_r50": 2e10}, 2e11)
print("JSON", vt["vt_modules_in_step_s"], vt["vt_modules_in_step_s_for_target"])
"""


@pytest.mark.parametrize("vt_step_s", [5.3, 4.9])
def test_step_bound_lines_and_a_vt_step_below_the_stripped_one(vt_step_s):
  """A ResNet-50 step of 6.0 s, 5.0 s without stage 5 (bound 1.2): a VT-R50 step of 5.3 s has
  VT modules of 0.3 s (20 GFLOP at 2e11 FLOP/s: 33% of the peak) against <= 5.0/0.97 - 5.0 s for
  0.97 of the bound; one of 4.9 s is faster than the step without any VT module, which only a
  change of load during the run can produce, and the printout says so."""
  out = subprocess.run([sys.executable, "-c", _STEP_BOUND, str(vt_step_s)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  in_step, needed = map(float, out.stdout.split("JSON ")[1].split())
  assert in_step == pytest.approx(vt_step_s - 5.0, abs=1e-3)
  assert needed == pytest.approx(5.0 / 0.97 - 5.0, abs=1e-3)
  assert f"its VT modules take {vt_step_s - 5.0:.3f} s of its step" in out.stdout
  assert ("(33% of the peak" in out.stdout) == (vt_step_s == 5.3)
  assert ("cannot be: the machine's load changed" in out.stdout) == (vt_step_s < 5.0)


def test_token_side_maps_are_the_vt_modules_maps_on_tokens():
  """The breakdown's token-side floor times exactly the maps that act on tokens: VT-R50's
  three modules have 3 tokenizer value maps, 2 recurrent token_to_filter maps, 4 transformer
  maps each and the projectors' key and value (2 projecting modules); the filter tokenizer's
  attention and the projectors' query maps act on pixels and are left out."""
  train_step = _train_step_module()
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from vt_jax import models  # pylint: disable=import-outside-toplevel
  from vt_jax.config_lib import files  # pylint: disable=import-outside-toplevel
  from vt_jax.models import vt_resnet  # pylint: disable=import-outside-toplevel

  config = files.load(os.path.join(ROOT, "configs", "vt_r50.py"))
  model = models.create_model(config.model)
  stage = vt_resnet.VTStage(model.vt, 3, model.dtype, layers="tuned")
  params = jax.eval_shape(lambda: stage.init(jax.random.key(0), jnp.ones((2, 14, 14, 1024))))
  shapes = train_step.token_map_shapes(params["params"])
  assert sorted(shapes) == sorted([(1024, 1024)] * (3 + 2 + 4) +
                                  [(1024, 256)] * 9 + [(256, 1024)] * 3)
  assert (1024, 8) not in shapes and (1, 64, 1024) not in shapes  # attention; grouped query


def test_op_profile_attributes_the_step_to_model_parts():
  out = subprocess.run(
      [sys.executable, "benchmarks/op_profile.py", "--configs=quickstart:width=4",
       "--resolution=32", "--batch=8", "--top=5"],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env=ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.splitlines()
  (head,) = [l for l in lines if l.startswith("quickstart:width=4 float32: step")]
  wall, traced = (float(v) for v in re.findall(r"([0-9.]+) s", head)[:2])
  assert 0 < traced and wall > 0
  rows = lines[lines.index(head) + 2:lines.index(head) + 7]
  assert len(rows) == 5 and all(re.match(r"\s+[0-9.]+\s+[0-9.]+%", r) for r in rows)
  # Ops are joined with the model code they came from, forward and backward.
  assert any("backbone/stage" in r or "stage5/vt" in r for r in rows), rows
  parts = lines[lines.index("  by model part (forward / backward, ms):") + 1:]
  assert {p.split()[0] for p in parts} >= {"stage1", "stage2", "stage5", "head"}


def _stability(*args, lines=False):
  out = subprocess.run(
      [sys.executable, "benchmarks/stability.py", "--config=configs/quickstart.py:width=4",
       "--resolution=32", "--batch=8", "--json", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env=ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  return (result, out.stdout.strip().splitlines()) if lines else result


def test_stability_reports_the_loss_from_the_initial_state_and_overrides_reach_the_step():
  """benchmarks/stability.py: the first loss is the initial state's (the quickstart zero-inits
  its head: exactly log(10)); on one fixed batch the loss then falls; a --config override
  reaches the step (a peak learning rate of 1e30 makes the loss non-finite once the warm-up
  has raised the rate: null in the JSON, exit status 0)."""
  import math  # pylint: disable=g-import-not-at-top
  fixed, lines = _stability("--updates=10", lines=True)
  assert (fixed["fresh"], fixed["batch"], fixed["resolution"]) == (False, 8, 32)
  # 8 x 16 x 16 x 4 floats at the stem: far below glibc's mmap threshold, so the malloc
  # settings, which only slow the compile there, are not applied (as vt_jax.main decides).
  assert "; malloc defaults (" in lines[-3]
  losses = fixed["losses"]
  assert len(losses) == 10 and abs(losses[0] - math.log(10)) < 1e-5
  assert losses[-1] < losses[0] - 0.05
  blown = _stability("--updates=4", "--fresh", "--config.schedule.peak_lr=1e30")
  assert blown["fresh"] is True and blown["losses"][2:] == [None, None]


@pytest.mark.parametrize("args,message", [
    (["--config=configs/no_such.py"], "ERROR: --config:"),
    (["--config=configs/quickstart.py", "--config.optimizer.nope=1"],
     "ERROR: the config has no field"),
])
def test_stability_names_a_bad_config_in_one_message(args, message):
  out = subprocess.run([sys.executable, "benchmarks/stability.py", *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=ENV)
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
  assert message in out.stderr and ("no_such.py" in out.stderr or "nope" in out.stderr)


# single_conv.py's own flags (--batch, --json) are also train_step.py's: checked in a child
# process, so that the two scripts' absl flags never meet in this one.
_CONV_PRODUCTS_ARE_RIGHT = """
import sys
import jax, numpy as np
sys.path.insert(0, "benchmarks")
import single_conv
from vt_jax.models import layers
batch, size, channels = 2, 5, 3
calls = single_conv.jax_products(batch, size, channels)
key = lambda i: jax.random.key(i)
x = jax.random.normal(key(0), (batch, size, size, channels))
k = jax.random.normal(key(1), (3, 3, channels, channels)) * 0.05
g = np.asarray(jax.random.normal(key(2), x.shape), np.float64)
x2, k2 = jax.random.normal(key(3), x.shape), jax.random.normal(key(4), k.shape)
conv = lambda a, b: np.asarray(layers.conv_nhwc(a, b, 1, 1), np.float64)
np.testing.assert_allclose(calls["forward"](), conv(x, k), rtol=1e-6)
dx, dk = (np.asarray(calls[p](), np.float64) for p in ("input_grad", "kernel_grad"))
assert dx.shape == x.shape and dk.shape == k.shape
np.testing.assert_allclose(np.sum(dx * np.asarray(x2)), np.sum(g * conv(x2, k)), rtol=1e-4)
np.testing.assert_allclose(np.sum(dk * np.asarray(k2)), np.sum(g * conv(x, k2)), rtol=1e-4)
print("adjoints hold")
"""


def test_single_conv_times_the_convolutions_forward_and_its_two_gradients():
  """Each timed call computes the product it is named after: checked by the adjoint
  identities <dL/dx, x'> = <g, conv(x', k)> and <dL/dk, k'> = <g, conv(x, k')> (g = dL/dy),
  which a swapped or wrong gradient breaks; then the script's JSON on tiny maps, and a bad
  --maps entry named in one line."""
  check = subprocess.run([sys.executable, "-c", _CONV_PRODUCTS_ARE_RIGHT], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env=ENV)
  assert check.returncode == 0 and "adjoints hold" in check.stdout, check.stderr[-3000:]

  out = subprocess.run([sys.executable, "benchmarks/single_conv.py", "--maps=6x4,3x8",
                        "--batch=2", "--calls=1", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert [r["map"] for r in result["rows"]] == ["6x4", "3x8"]
  assert [r["flops"] for r in result["rows"]] == [2 * 2 * 36 * 16 * 9, 2 * 2 * 9 * 64 * 9]
  assert all(r[f"{p}_s"] > 0 for r in result["rows"]
             for p in ("forward", "input_grad", "kernel_grad"))

  bad = subprocess.run([sys.executable, "benchmarks/single_conv.py", "--maps=56by64"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
  assert bad.returncode == 1 and "--maps entry '56by64' is not SIZExCHANNELS" in bad.stderr


# Stand-ins for the two Pythons bracketed_run.py drives: PyTorch's (its first round 10% faster
# than its second, as a machine drifting during the run) and vt_jax's, whose train_step.py JSON
# has the fields of the real one (the real one's are checked by the tests above).
_FAKE_TORCH = """
import json, os, sys
args = sys.argv[1:]
if args[0] == "-c":
  sys.exit(0)
if args[0].endswith("single_conv.py"):
  print("conv table"); sys.exit(0)
if os.environ.get("FAKE_TORCH_PID_FILE"):  # a run that is interrupted: hang until killed
  open(os.environ["FAKE_TORCH_PID_FILE"], "w").write(str(os.getpid()))
  import time
  time.sleep(600)
model = next(a.split("=")[1] for a in args if a.startswith("--model="))
cl = "--channels_last" in args
count_file = os.environ["FAKE_TORCH_COUNT"]
n = int(open(count_file).read()) if os.path.exists(count_file) else 0
open(count_file, "w").write(str(n + 1))
ips = {"resnet18": 10.0, "resnet50": 4.0}[model] * (2.0 if cl else 1.0) * (1.1 if n < 4 else 1.0)
print("some torch output")
print(json.dumps({"model": model, "images_per_sec": round(ips, 3),
                  "memory_format": "channels_last" if cl else "default"}))
"""
_FAKE_JAX = """
import json, sys
if sys.argv[1].endswith("single_conv.py"):
  print("conv table"); sys.exit(0)
if "--fail" in sys.argv:
  print("Traceback: something broke", flush=True); sys.exit(3)
stage5 = lambda s, p, tm=None: dict(seconds=s, of_peak=p, of_peak_performed=p,
                                    **({"token_maps_s": tm} if tm else {}))
print(json.dumps({"peak_flops": 2e11, "runs": [
    dict(model="resnet18", images_per_sec=21.0, mfu=0.7, vt_speedup_bound=1.2,
         stages={"stage5": stage5(0.4, 0.8)}),
    dict(model="vt_r18", images_per_sec=24.0, mfu=0.6, of_vt_speedup_bound=0.952,
         vt_modules_in_step_s=0.2, vt_modules_in_step_s_for_target=0.05,
         stages={"stage5": stage5(0.2, 0.55, 0.13)}),
    dict(model="resnet50", images_per_sec=5.0, mfu=0.6, vt_speedup_bound=1.23),
    dict(model="vt_r50", images_per_sec=5.5, mfu=0.55, of_vt_speedup_bound=0.894,
         vt_modules_in_step_s=0.4, vt_modules_in_step_s_for_target=0.15,
         stages={"stage5": stage5(0.3, 0.41, 0.12)})]}))
"""


def _fake_python(tmp_path, name, body):
  path = tmp_path / name
  path.write_text(f"#!{sys.executable}\n{body}")
  path.chmod(0o755)
  return str(path)


# Runs a Python with SIGINT at its default, as in a terminal where Ctrl-C reaches it (a
# background shell's children start with it ignored). Not preexec_fn: that forks this
# process, which has JAX's threads.
_SIGINT_DEFAULT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")


def _bracketed(tmp_path, *args, run=subprocess.run, **env_extra):
  env = dict(ENV, FAKE_TORCH_COUNT=str(tmp_path / "count"), **env_extra)
  command = [sys.executable, "benchmarks/bracketed_run.py",
             f"--torch_python={_fake_python(tmp_path, 'torch_python', _FAKE_TORCH)}",
             f"--jax_python={_fake_python(tmp_path, 'jax_python', _FAKE_JAX)}",
             f"--out={tmp_path / 'run'}", *args]
  if run is subprocess.run:
    return run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  return run([sys.executable, "-c", _SIGINT_DEFAULT, *command[1:]], cwd=ROOT, env=env,
             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_bracketed_run_brackets_vt_jax_between_two_pytorch_rounds_and_marks_the_targets(tmp_path):
  out = _bracketed(tmp_path, "--single_conv")
  assert out.returncode == 0, out.stderr[-3000:]
  run = tmp_path / "run"
  assert int((tmp_path / "count").read_text()) == 8  # four PyTorch runs, twice
  order = sorted(run.iterdir(), key=lambda p: p.stat().st_mtime_ns)
  names = [p.stem for p in order if p.suffix == ".log"]
  assert names[:4] == ["torch_before_resnet18_default", "torch_before_resnet18_channels_last",
                       "torch_before_resnet50_default", "torch_before_resnet50_channels_last"]
  assert names[4:7] == ["single_conv_torch", "single_conv_jax", "train_step"]
  assert all(n.startswith("torch_after_") for n in names[7:]) and len(names) == 11
  assert "--channels_last --breakdown" in (run / "torch_before_resnet18_channels_last.log").read_text()

  summary = json.loads((run / "summary.json").read_text())
  rows = {r["model"]: r for r in summary["rows"]}
  # PyTorch ResNet-18 channels_last: 22.0 before, 20.0 after; vt_jax 21.0 -> 0.95-1.05x.
  assert rows["resnet18"]["pytorch_channels_last"] == [20.0, 22.0]
  assert rows["resnet18"]["vs_pytorch_channels_last"] == [pytest.approx(21 / 22, abs=1e-3),
                                                          pytest.approx(21 / 20, abs=1e-3)]
  assert rows["resnet50"]["vs_pytorch_default"] == [pytest.approx(5 / 4.4, abs=1e-3), 1.25]
  assert "pytorch_default" not in rows["vt_r18"]
  assert rows["vt_r18"]["vt_modules_alone_of_peak"] == 0.55
  targets = {t["what"]: t for t in summary["targets"]}
  assert targets["vt_r18 / its ResNet, share of vt_speedup_bound"]["met"] is False  # 0.952
  assert targets["vt_r18's VT modules alone, share of the matmul peak"]["met"] is True
  assert targets["vt_r50's VT modules alone, share of the matmul peak"]["met"] is False
  # Met only against both PyTorch runs: 1.05x against the slower is not enough.
  assert targets["resnet18 / PyTorch channels_last (before and after)"]["met"] is False
  printed = out.stdout.splitlines()
  assert "not met  resnet18 / PyTorch channels_last (before and after): 0.95-1.05 (target >= 1.00)" in [
      l.strip() for l in printed]
  assert any(l.strip().startswith("vt_r50") and "0.89 of the bound; modules alone 0.300 s = 41% of the peak" in l
             for l in printed)


def test_bracketed_run_names_what_failed_and_where_its_log_is(tmp_path):
  failed = _bracketed(tmp_path, "--train_step_args=--fail")
  assert failed.returncode == 1 and "Traceback" not in failed.stderr.split("its last lines")[0]
  assert "ERROR: train_step failed (exit 3):" in failed.stderr
  assert str(tmp_path / "run" / "train_step.log") in failed.stderr
  assert "something broke" in failed.stderr
  assert not (tmp_path / "run" / "summary.json").exists()

  no_torch = subprocess.run(
      [sys.executable, "benchmarks/bracketed_run.py", f"--torch_python={sys.executable}",
       f"--out={tmp_path / 'run2'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)
  assert no_torch.returncode == 1
  assert f"--torch_python={sys.executable} cannot import torch" in no_torch.stderr
  missing = subprocess.run([sys.executable, "benchmarks/bracketed_run.py"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120, env=ENV)
  assert missing.returncode == 1 and "ERROR: --torch_python is required" in missing.stderr
  assert len(missing.stderr.strip().splitlines()) == 1  # the error, not the flags' help
  unwritable = _bracketed(tmp_path, f"--out={tmp_path / 'run' / 'train_step.log' / 'x'}")
  assert unwritable.returncode == 1 and "cannot make that folder" in unwritable.stderr
  # summary.json cannot be written (here: a folder has its name): the summary is still printed.
  (tmp_path / "run3").mkdir()
  (tmp_path / "run3" / "summary.json").mkdir()
  unsaved = _bracketed(tmp_path, f"--out={tmp_path / 'run3'}")
  assert unsaved.returncode == 1 and "targets:" in unsaved.stdout
  assert f"ERROR: writing {tmp_path / 'run3' / 'summary.json'}: Is a directory" in unsaved.stderr


def test_an_interrupted_bracketed_run_stops_the_benchmark_it_was_running(tmp_path):
  """Ctrl-C: exit 130, the logs so far kept, and no PyTorch run left going on its own."""
  pid_file = tmp_path / "torch.pid"
  proc = _bracketed(tmp_path, run=subprocess.Popen, FAKE_TORCH_PID_FILE=str(pid_file))
  deadline = time.time() + 60
  while not pid_file.exists() and time.time() < deadline:
    time.sleep(0.1)
  time.sleep(0.2)
  torch_pid = int(pid_file.read_text())
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 130 and f"interrupted: the logs so far are in {tmp_path / 'run'}" in err
  assert (tmp_path / "run" / "torch_before_resnet18_default.log").exists()
  time.sleep(0.5)
  with pytest.raises(ProcessLookupError):
    os.kill(torch_pid, 0)
