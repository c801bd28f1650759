r"""Train-step speed of ResNets and VT-ResNets against the device's matmul peak, in one run.

  python benchmarks/train_step.py                       # R18, VT-R18, R50, VT-R50; f32, batch 32
  python benchmarks/train_step.py --quick               # the same, fewer steps (< 10 min, 2 cores)
  python benchmarks/train_step.py --configs=resnet50,vt_r50 --dtypes=bfloat16 --batch=256 \
      --nobreakdown --json                              # a GPU run (see benchmarks/gpu_run.sh)
  python benchmarks/train_step.py --configs=resnet50,vt_r50 --augment_device=autoaugment \
      --nobreakdown                                     # + the device augmentation's share

For each config (a name in configs/, optionally NAME:ARG) and dtype it prints:
  * the real train step (vt_jax.train.steps: forward, backward, optimizer, EMA) on a
    synthetic batch: images/s, achieved FLOP/s (profile MACs x 6 per image: forward 2,
    backward 4), MFU against the peak, compile seconds and XLA's memory estimate
    (arguments + outputs + temporaries of the compiled step), and the process's CPU-seconds
    per step (all threads: on a shared machine a steadier yardstick than wall-clock);
  * VT vs ResNet of the same depth, same dtype, same run; and for a ResNet next to a VT
    config, the bound on that ratio: the train step of the ResNet without stage 5 (stem,
    stages 2-4, head: what a VT-ResNet of that depth runs besides its VT modules), timed in
    turn with the others; ResNet step / that step is the speed-up a VT-ResNet could reach if
    its VT modules took no time (vt_speedup_bound), and each VT run's ratio is given as a
    share of it (of_vt_speedup_bound), with what its VT modules cost inside its train step
    (its step minus the stripped one) and may cost for 0.97 of the bound (the speed issue's
    target), each also as a share of the peak on the FLOPs they perform;
  * with --augment_device=POLICY, each config's train step again with the flip and POLICY
    applied in the step (config.data.augment_device; uint8 batch), timed in turn with the
    plain step, and the augmentation's share of the augmented step: from the difference of
    the two steps, and from the augmentation + normalisation timed alone;
  * with --breakdown, a per-stage table: each stage (stem, stages 2-4, stage 5 or the VT
    modules, head) forward+backward alone on its own input, seconds and FLOP/s each, next to
    its share of the MACs -- where wall-clock goes against where the MACs are (FLOP/s and
    MFU count the paper's MACs, vt_jax.profile's; where the layers perform fewer, a
    'performed' column counts those too), and for a VT stage also its token-side linear
    maps alone (token_maps_alone: the least the VT modules can take here); and, for a
    ResNet run next to a VT config, its stages as one chain (forward+backward, no optimizer)
    with and without stage 5: the same bound from the stages alone (vt_speedup_bound_chain;
    until 2026-12-01 the JSON's vt_speedup_bound was this figure; the chain takes longer
    than the whole train step (6.00 s against 5.52 s for ResNet-50 on one VM), though its
    ratio came within 0.5% of the train steps' in the run that timed both).
    On the CPU (with vt_jax's malloc settings) each config's breakdown runs in a fresh child
    process of this script, not after the train steps (why: breakdown_in_child).
The peak is a measured float32 2048^3 matmul on CPU (best of 10 calls), and the vendor's
dense bfloat16 figure on a GPU/TPU (or --peak_flops). Ratios measured in one run are what to
quote: absolute figures move with the machine's load. --json prints one object as the last line:
  {"peak_flops": ..., "runs": [{"model", "dtype", "batch", "resolution", "images_per_sec",
  "mfu"}, ...]}; next to a VT config, a ResNet's run also carries "vt_speedup_bound" and a VT
  run "of_vt_speedup_bound" (its ratio / that bound), "vt_modules_in_step_s" and
  "vt_modules_in_step_s_for_target" (seconds, for 0.97 of the bound); with --breakdown, every
  run carries "stages": {stage: {"seconds", "of_peak" (the paper's MACs), "of_peak_performed"
  (the MACs the form performs)}, with "token_maps_s" on a VT stage}, and the ResNet's run
  "vt_speedup_bound_chain"; with --notrain_step the object carries "bounds" (chain bounds,
  {"SPEC/DTYPE": ratio}) and "breakdowns" ({"SPEC/DTYPE": stages}) instead.
Needs no TensorFlow (no data pipeline; batches are synthetic), except --augment_device
(the policies' tables live in vt_jax.data.augment, which imports it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from a checkout: `python benchmarks/train_step.py`
  sys.path.insert(0, ROOT)

from vt_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from vt_jax import profile  # pylint: disable=g-import-not-at-top,wrong-import-position
from vt_jax import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from vt_jax.config_lib import files as config_files  # pylint: disable=g-import-not-at-top
from vt_jax.models import resnet  # pylint: disable=g-import-not-at-top,wrong-import-position
from vt_jax.models import vt_resnet  # pylint: disable=g-import-not-at-top,wrong-import-position
from vt_jax.train import optim  # pylint: disable=g-import-not-at-top,wrong-import-position
from vt_jax.train import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
from vt_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
from vt_jax.train import steps as steps_lib  # pylint: disable=g-import-not-at-top

_CONFIGS = flags.DEFINE_list("configs", ["resnet18", "vt_r18", "resnet50", "vt_r50"],
                             "config names in configs/ (NAME or NAME:ARG), or paths to .py files")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "compute dtypes (model.dtype) to run")
_BATCH = flags.DEFINE_integer("batch", 32, "global batch size")
_RESOLUTION = flags.DEFINE_integer("resolution", 224, "square image size in pixels")
_STEPS = flags.DEFINE_integer("steps", 5, "timed train steps (median) after compile + warm-up")
_TRAIN_STEP = flags.DEFINE_bool("train_step", True, "time the whole train step (--notrain_step:"
                                 " only the --breakdown)")
_BREAKDOWN = flags.DEFINE_bool("breakdown", True, "also time each stage alone")
_QUICK = flags.DEFINE_bool("quick", False, "fewer timed steps (3) and a 1-call stage breakdown")
_PEAK = flags.DEFINE_float("peak_flops", None, "FLOP/s that MFU is measured against "
                           "(default: measured matmul on CPU, nominal bfloat16 on GPU/TPU)")
_JSON = flags.DEFINE_bool("json", False, "print one JSON object as the last line")
_AUGMENT = flags.DEFINE_enum("augment_device", "none", ["none", "autoaugment", "randaugment"],
                             "also time each train step with this policy and the flip on "
                             "the device (config.data.augment_device) and print its share")
_INTERLEAVE = flags.DEFINE_bool("interleave", True, "compile every config first, then time "
                                "their steps in turn (A B A B ...), so load changes hit all "
                                "alike; --nointerleave: one config at a time (less memory)")
_LAYERS = flags.DEFINE_enum("layers", None, ["auto", "tuned", "flax"], "model.layers for every "
                            "config (default: each config's own, 'auto': tuned on CPU, flax "
                            "elsewhere)")
_FRESH = flags.DEFINE_bool("breakdown_in_child", True, "on the CPU with vt_jax's malloc "
                           "settings, time each config's breakdown in a fresh child process "
                           "(see breakdown_in_child()); --nobreakdown_in_child: in this one")
_BOUND = flags.DEFINE_bool("speedup_bound", None, "time a ResNet's vt_speedup_bound (its train "
                           "step without stage 5; with --breakdown also the chain bound) "
                           "(default: when --configs also names a VT config)")

# Dense bfloat16 FLOP/s per chip (vendor figures), for MFU off CPU; matched on device_kind.
NOMINAL_PEAK = {"H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12,
                "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
                "TPU v6": 918e12}


def timed(fn, *args, calls: int, cpu: bool = False):
  """Median seconds of `calls` calls of fn(*args) (already compiled and warmed up);
  with cpu=True, (wall seconds, CPU-seconds of all threads)."""
  times, cpu_times = [], []
  for _ in range(calls):
    start, cpu_start = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
    cpu_times.append(time.process_time() - cpu_start)
  if cpu:
    return float(statistics.median(times)), float(statistics.median(cpu_times))
  return float(statistics.median(times))


def peak_flops() -> tuple[float, str]:
  """(FLOP/s, how it was obtained)."""
  if _PEAK.value:
    return _PEAK.value, "--peak_flops"
  dev = jax.devices()[0]
  if dev.platform == "cpu":
    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda x, y: x @ y)
    for _ in range(3):  # warm: the thread pool and the clock ramp up over the first calls
      jax.block_until_ready(mm(a, a))
    # A peak: the best of 10 calls. (Best of 5 right after start-up once measured 404 GFLOP/s
    # where the same machine gave 449 an hour before, and a stage then ran at "100%".)
    best = min(timed(mm, a, a, calls=1) for _ in range(10))
    return 2 * n**3 / best, f"measured float32 {n}^3 matmul on CPU, best of 10"
  for kind, flops in NOMINAL_PEAK.items():
    if kind.lower() in dev.device_kind.lower():
      return flops * jax.device_count(), f"nominal bfloat16 {kind} x{jax.device_count()}"
  raise app.UsageError(f"no nominal peak for device {dev.device_kind!r}; pass --peak_flops")


def load_config(spec: str, dtype: str) -> ml_collections.ConfigDict:
  name, _, arg = spec.partition(":")
  path = name if name.endswith(".py") else os.path.join(ROOT, "configs", name + ".py")
  config = config_files.load(path + (":" + arg if arg else ""), field="--configs")
  config.model.dtype = dtype
  if _LAYERS.value:
    config.model.layers = _LAYERS.value
  config.batch_size = _BATCH.value
  return config


def memory_bytes(compiled) -> float:
  mem = compiled.memory_analysis()
  if mem is None:
    return float("nan")
  return float(mem.argument_size_in_bytes + mem.output_size_in_bytes
               + mem.temp_size_in_bytes - mem.alias_size_in_bytes)


def with_device_augment(config, policy: str) -> ml_collections.ConfigDict:
  """A copy of `config` whose train step flips and augments uint8 batches itself."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.augment = policy
  config.data.augment_device = True
  return config


def _device_augments(config) -> bool:
  return bool(config.data.get("augment_device", False))


class WithoutStage5(resnet.ResNet):
  """A ResNet's stem, stages 2-4 and head, without stage 5 (the head pools stage 4's map).

  What a VT-ResNet of the same depth computes besides its VT modules: its train step is a
  VT-ResNet's step with VT modules that take no time, so ResNet step / this step bounds the
  VT-ResNet's speed-up over the ResNet (vt_speedup_bound).
  """

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    x = self.backbone(last_stage=4)(images, train)
    return self.head()(x.mean(axis=(1, 2)), train)


def without_stage5(config) -> WithoutStage5:
  """WithoutStage5 with every field of the ResNet that `config` (a resnet config) builds."""
  model = models.create_model(config.model)
  return WithoutStage5(**{f.name: getattr(model, f.name)
                          for f in dataclasses.fields(resnet.Classifier)
                          if f.init and f.name not in ("parent", "name")})


def prepare_step(config, warm_up: bool = True, model=None) -> dict:
  """The real train step compiled for one synthetic batch, its state and the batch.

  `start` is the state after one warm-up step, or with warm_up=False the initial state.
  `model`: a flax module to train instead of the one config.model describes (with config's
  recipe).
  """
  size, batch = _RESOLUTION.value, _BATCH.value
  mesh = sharding_lib.make_mesh(config.mesh)
  if batch % mesh.shape[sharding_lib.DATA]:
    raise app.UsageError(f"--batch={batch} must be divisible by the mesh's data axis "
                         f"({mesh.shape[sharding_lib.DATA]} devices)")
  model = model if model is not None else models.create_model(config.model)
  tx = optim.make_optimizer(config, 1000)
  init, shardings, _ = state_lib.sharded_init(model, tx, (size, size, 3), mesh,
                                              config.mesh.rules)
  state = init(jax.random.PRNGKey(0))
  step = steps_lib.make_train_step(model, tx, config, 1000, mesh, shardings)
  rng = np.random.default_rng(0)
  data = {"image": rng.normal(size=(batch, size, size, 3)).astype(np.float32),
          "label": rng.integers(0, config.model.num_classes, batch).astype(np.int32),
          "valid": np.ones(batch, np.float32)}
  if _device_augments(config):  # what the host sends then: uint8 crops, epoch, index
    data.update(image=rng.integers(0, 256, (batch, size, size, 3)).astype(np.uint8),
                epoch=np.zeros(batch, np.int32), index=np.arange(batch, dtype=np.int32))
  data = jax.device_put(data, sharding_lib.batch_sharding(mesh))
  # Wrapping the step in a donating jit inlines it (same shardings, same program) and gives
  # the compiled object: compile time alone, and XLA's memory estimate.
  start = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=(0,)).lower(state, data).compile()
  compile_s = time.perf_counter() - start
  if warm_up:
    state, metrics = compiled(state, data)
    jax.block_until_ready(metrics)
  return dict(name=config.model.name, compiled=compiled, start=state, data=data,
              compile_s=compile_s, memory_bytes=memory_bytes(compiled), times=[], cpu=[])


def time_step(prepared: dict) -> None:
  """Times one more step of a prepare_step() result (wall and CPU seconds).

  Every timed step starts from the same state (the one after the warm-up step; the copy is
  made before the clock starts). Why: repeating updates on one synthetic batch is not
  training, and a model whose recipe overshoots on it (with flax's LeCun-normal VT kernels the
  shipped VT-R50 reached a loss of 7e14 by the third step) would be timed on ever larger or
  non-finite values, and --steps would change what is timed.
  """
  state = jax.tree_util.tree_map(jnp.copy, prepared["start"])
  jax.block_until_ready(state)
  start, cpu_start = time.perf_counter(), time.process_time()
  _, metrics = prepared["compiled"](state, prepared["data"])
  jax.block_until_ready(metrics)
  prepared["times"].append(time.perf_counter() - start)
  prepared["cpu"].append(time.process_time() - cpu_start)
  if not np.isfinite(float(metrics["loss"])):
    raise FloatingPointError(f"{prepared['name']}: non-finite loss in the benchmark step")


def augment_alone_s(config, data, calls: int) -> float:
  """Seconds of the device augmentation + normalisation of `data` alone (its own jit)."""
  from vt_jax.data import augment_device  # pylint: disable=g-import-not-at-top
  fn = jax.jit(lambda b: augment_device.train_images(b, config))
  jax.block_until_ready(fn(data))
  return timed(fn, data, calls=calls)


def print_augment_shares(specs, plain, augmented, alone) -> list[dict]:
  """The device augmentation's share of each augmented train step."""
  print(f"device augmentation ({_AUGMENT.value} + flip, in the train step), batch "
        f"{_BATCH.value}, {_RESOLUTION.value} px:")
  print(f"  {'model':<12} {'step s':>8} {'+aug s':>8} {'share':>6} {'alone s':>8} "
        f"{'share':>6}")
  out = []
  for spec, p, a, al in zip(specs, plain, augmented, alone):
    share, alone_share = (a["step_s"] - p["step_s"]) / a["step_s"], al / a["step_s"]
    print(f"  {spec:<12} {p['step_s']:>8.4f} {a['step_s']:>8.4f} {share:>6.1%} {al:>8.4f} "
          f"{alone_share:>6.1%}", flush=True)
    out.append(dict(policy=_AUGMENT.value, step_s=round(p["step_s"], 6),
                    augmented_step_s=round(a["step_s"], 6), share=round(share, 4),
                    alone_s=round(al, 6), alone_share=round(alone_share, 4)))
  return out


def step_figures(prepared: dict) -> dict:
  step_s = statistics.median(prepared["times"])
  return dict(images_per_sec=_BATCH.value / step_s, step_s=step_s,
              compile_s=prepared["compile_s"], memory_bytes=prepared["memory_bytes"],
              cpu_s=statistics.median(prepared["cpu"]))


def bench_steps(configs: list, steps: int, models_: list | None = None) -> list[dict]:
  """Figures of each config's train step (of models_[i] instead of the config's model where
  given). With --interleave, every config is compiled first and their steps are then timed in
  turn (A B C A B C ...), so that a change of the machine's load during the run hits every
  config alike and the ratios stay comparable."""
  models_ = models_ or [None] * len(configs)
  if not _INTERLEAVE.value:
    results = []
    for config, model in zip(configs, models_):
      prepared = prepare_step(config, model=model)
      for _ in range(steps):
        time_step(prepared)
      alone = (augment_alone_s(config, prepared["data"], max(steps, 3))
               if _device_augments(config) else None)
      results.append(dict(step_figures(prepared), augment_alone_s=alone))
      del prepared
    return results
  prepared = [prepare_step(c, model=m) for c, m in zip(configs, models_)]
  for _ in range(steps):
    for p in prepared:
      time_step(p)
  alone = [augment_alone_s(c, p["data"], max(steps, 3)) if _device_augments(c) else None
           for c, p in zip(configs, prepared)]
  return [dict(step_figures(p), augment_alone_s=a) for p, a in zip(prepared, alone)]


def stage_parts(model, config, x_shape) -> list[tuple[str, object, tuple]]:
  """[(stage name, module, input shape)] whose composition is the model's forward pass.

  Built from the same classes and fields as `model`, each on its own: timing a part alone
  needs its own jit, and the model's submodules are created inline (not attributes).
  """
  m = model
  b = x_shape[0]
  parts = [("stage1", resnet.Stem(m.width, m.small_image_stem, m.dtype, layers=m.layers),
            x_shape)]
  survivals = resnet.block_survivals(m.depth, m.stochastic_depth_survival,
                                     4 if config.model.name == "vt_resnet" else 5)
  shape = jax.eval_shape(lambda: jnp.zeros(x_shape)).shape
  shape = _out_shape(parts[0][1], shape)
  for s in range(4):
    if s == 3 and config.model.name == "vt_resnet":
      modules = m.vt.modules or resnet.STAGE_SIZES[m.depth][3]
      part = vt_resnet.VTStage(m.vt, modules, m.dtype, layers=m.layers)
    else:
      part = resnet.ResNetStage(m.depth, m.width * 2**s, resnet.STAGE_SIZES[m.depth][s],
                                1 if s == 0 else 2, survivals[s], m.zero_init_residual, m.dtype,
                                layers=m.layers)
    parts.append((f"stage{s + 2}", part, shape))
    shape = _out_shape(part, shape)
  feat = shape[-1]
  parts.append(("head", resnet.Head(m.num_classes, m.dropout, m.zero_init_head, m.dtype),
                (b, feat)))
  return parts


def _apply(module, variables, x, train=True):
  if isinstance(module, (resnet.Stem, resnet.ResNetStage, resnet.Head)):
    return module.apply(variables, x, train, mutable=["batch_stats"],
                        rngs={"dropout": jax.random.key(0)})
  return module.apply(variables, x), {}


def _out_shape(module, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(lambda x: _init(module, x), x)
  out, _ = jax.eval_shape(lambda v, x: _apply(module, v, x), variables, x)
  return out.shape


def _init(module, x):
  if isinstance(module, (resnet.Stem, resnet.ResNetStage, resnet.Head)):
    return module.init(jax.random.key(0), x, False)
  return module.init(jax.random.key(0), x)


def breakdown(model, config, calls: int) -> list[dict]:
  """Forward + backward seconds of each stage alone (gradients w.r.t. params and input)."""
  size, batch = _RESOLUTION.value, _BATCH.value
  rows = []
  for name, module, shape in stage_parts(model, config, (batch, size, size, 3)):
    x = jax.random.normal(jax.random.key(1), shape, jnp.float32)
    variables = jax.jit(lambda x, module=module: _init(module, x))(x)

    def loss(params, x, module=module, variables=variables):
      out, _ = _apply(module, dict(variables, params=params), x)
      return jnp.sum(out.astype(jnp.float32) ** 2) * 1e-6

    # The stem's input is the image: the train step never differentiates w.r.t. it.
    grad = jax.jit(jax.grad(loss, argnums=(0,) if name == "stage1" else (0, 1)))
    jax.block_until_ready(grad(variables["params"], x))
    wall, cpu = timed(grad, variables["params"], x, calls=calls, cpu=True)
    rows.append(dict(stage=name, seconds=wall, cpu_s=cpu))
    if isinstance(module, vt_resnet.VTStage):
      rows[-1]["token_maps"] = token_maps_alone(variables["params"],
                                                batch * model.vt.tokens, calls)
  return rows


# The VT modules' linear maps that act on tokens (rows: batch x tokens), by their parameter
# paths; the others (the filter tokenizer's `attention`, the projector's `query`) act on pixels.
_TOKEN_MAPS = re.compile(r"(\['interaction'\].*|\['(value|token_to_filter|key|"
                         r"position_to_tokens|to_tokens)'\])\['kernel'\]$")


def token_map_shapes(params) -> list[tuple[int, int]]:
  """[in, out] of the VT stage's 2-D kernels that act on tokens, in parameter order."""
  shapes = [tuple(leaf.shape) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
            if leaf.ndim == 2 and _TOKEN_MAPS.search(jax.tree_util.keystr(path))]
  if not shapes:
    raise ValueError("no token-side linear map found among the VT stage's parameters")
  return shapes


def token_maps_alone(params, rows: int, calls: int) -> dict:
  """Forward + backward seconds of the VT stage's token-side linear maps alone.

  `params`: the VT stage's parameters (shapes suffice); rows: batch x tokens. Each 2-D kernel
  on a path `_TOKEN_MAPS` names (the tokenizers' value maps, the recurrent tokenizer's
  token_to_filter, the transformer's maps, the projector's key and value) is applied to a
  [rows, in] tensor, in parameter order (sorted by path; the order changes nothing timed),
  each output feeding the loss and the next map of its width (so none is dead code). What it
  gives: how long the matmuls whose shapes the paper's VT modules fix take on this machine with nothing else around them (the softmaxes, the
  per-pixel products, the head transposes and the residual adds removed), the least time the
  modules can take in XLA's op-by-op execution.
  """
  shapes = token_map_shapes(params)
  widths = sorted({a for a, _ in shapes} | {b for _, b in shapes})
  start = {w: jax.random.normal(jax.random.key(w), (rows, w), jnp.float32) for w in widths}
  ws = [jax.random.normal(jax.random.key(i), k, jnp.float32) / k[0] ** 0.5
        for i, k in enumerate(shapes)]

  def loss(ws, start):
    latest, total = dict(start), 0.0
    for w in ws:
      y = latest[w.shape[0]] @ w
      total = total + jnp.sum(y * y)
      latest[w.shape[1]] = latest[w.shape[1]] + y
    return total * 1e-6

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  jax.block_until_ready(grad(ws, start))
  wall, _ = timed(grad, ws, start, calls=calls, cpu=True)
  return dict(seconds=wall, maps=len(ws), flops=6 * rows * sum(a * b for a, b in shapes))


def stage5_free_bound(model, config, calls: int) -> dict:
  """Forward + backward of a ResNet's whole chain of stages, and of the chain without stage 5.

  A VT-ResNet shares stages 1-4 and the head with the ResNet of its depth and replaces
  stage 5, so whole / without-stage-5 bounds its speed-up over that ResNet: the ratio it would
  reach if its VT modules took no time at all. One jit per chain, so XLA fuses across the
  stage boundaries as in the train step (unlike the stage-alone breakdown).
  """
  size, batch = _RESOLUTION.value, _BATCH.value
  parts = stage_parts(model, config, (batch, size, size, 3))
  image = jax.random.normal(jax.random.key(1), (batch, size, size, 3), jnp.float32)

  def chain(parts):
    x, variables = image, []
    for name, module, _ in parts:  # init each part on its input; the head sees pooled features
      x = x.mean((1, 2)) if name == "head" else x
      variables.append(jax.jit(lambda x, module=module: _init(module, x))(x))
      x = jax.eval_shape(lambda v, x, module=module: _apply(module, v, x)[0], variables[-1], x)
      x = jnp.zeros(x.shape, x.dtype)

    def loss(params):
      x = image
      for (name, module, _), v, p in zip(parts, variables, params):
        x, _ = _apply(module, dict(v, params=p), x.mean((1, 2)) if name == "head" else x)
      return jnp.sum(x.astype(jnp.float32) ** 2) * 1e-6

    params = [v["params"] for v in variables]
    grad = jax.jit(jax.grad(loss))
    jax.block_until_ready(grad(params))
    return grad, params

  whole, without = chain(parts), chain([p for p in parts if p[0] != "stage5"])
  times = {"whole": [], "without_stage5": []}
  for _ in range(max(calls, 3)):  # in turn, so a load change hits both
    for key, (grad, params) in (("whole", whole), ("without_stage5", without)):
      times[key].append(timed(grad, params, calls=1))
  return {k: statistics.median(v) for k, v in times.items()}


def breakdown_in_child(spec: str, dtype: str, peak: float,
                       bound: bool) -> tuple[float | None, dict]:
  """Runs this script for one config's breakdown (and bound) alone; returns the bound ratio
  (None without `bound`) and the stage figures (breakdown_figures()).

  Why a child process: with vt_jax's malloc settings (one arena, freed memory kept; see
  vt_jax/host_allocator.py) every program that runs after the train steps allocates from the
  heap those steps left behind, and the stage-alone programs ran up to 30% slower there than in
  a fresh process (VT-R18's VT modules 0.123 vs 0.106 s, VT-R50's 0.231 vs 0.174 s); with
  glibc's defaults the two agree. The train steps themselves are timed here as before. Its
  output (the tables) is printed as it is; the peak is this process's, so MFU columns agree.
  """
  cmd = [sys.executable, os.path.abspath(__file__), f"--configs={spec}", f"--dtypes={dtype}",
         f"--batch={_BATCH.value}", f"--resolution={_RESOLUTION.value}", "--notrain_step",
         "--nobreakdown_in_child", f"--peak_flops={peak}", "--json",
         "--quick" if _QUICK.value else "--noquick",
         "--speedup_bound" if bound else "--nospeedup_bound"]
  if _LAYERS.value:
    cmd.append(f"--layers={_LAYERS.value}")
  out = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if out.returncode:
    raise RuntimeError(f"the breakdown of {spec} ({dtype}) in a child process failed "
                       f"({' '.join(cmd)}):\n{out.stderr[-3000:]}")
  lines = out.stdout.strip().splitlines()
  for line in lines[1:-1]:  # without its device line and its JSON
    print(line, flush=True)
  result = json.loads(lines[-1])
  return (result.get("bounds", {}).get(f"{spec}/{dtype}"),
          result["breakdowns"][f"{spec}/{dtype}"])


def bound_ratio(times: dict) -> float:
  """whole / without stage 5, rounded as the JSON's vt_speedup_bound_chain (and the printed
  line)."""
  return round(times["whole"] / times["without_stage5"], 3)


def print_bound(spec: str, times: dict) -> None:
  print(f"  {spec}: stages + head forward+backward as one jit {times['whole']:.3f} s, without "
        f"stage 5 {times['without_stage5']:.3f} s -> {bound_ratio(times):.2f}x "
        f"(vt_speedup_bound_chain; the train steps' vt_speedup_bound is the one to quote)",
        flush=True)


def print_breakdown(spec: str, dtype: str, prof: dict, rows: list[dict], peak: float,
                    performed: dict[str, int]) -> dict:
  """The stage table. 'of peak' counts the paper's MACs (prof, as MFU does); where the
  model's layers perform fewer (the tuned projector's folded query map), a 'performed'
  column gives the share counting the MACs the form performs (`performed`, per stage).
  Returns the same figures for the JSON (breakdown_figures())."""
  figures = breakdown_figures(prof, rows, peak, performed)
  total_s = sum(r["seconds"] for r in rows)
  differs = any(performed[r["stage"]] != prof["stages"][r["stage"]]["macs"] for r in rows)
  print(f"  {spec} {dtype}: each stage forward+backward alone, batch {_BATCH.value}")
  print(f"  {'stage':<8} {'seconds':>8} {'time %':>7} {'MAC %':>6} {'GFLOP/s':>9} {'of peak':>8} "
        f"{'CPU-s':>7}" + (f" {'performed':>9}" if differs else ""))
  for r in rows:
    f = figures[r["stage"]]
    print(f"  {r['stage']:<8} {r['seconds']:>8.3f} {r['seconds'] / total_s:>7.1%} "
          f"{prof['stages'][r['stage']]['macs'] / prof['macs']:>6.1%} "
          f"{f['of_peak'] * peak / 1e9:>9.1f} {f['of_peak']:>8.1%} {r['cpu_s']:>7.3f}"
          + (f" {f['of_peak_performed']:>9.1%}" if differs else ""), flush=True)
  for r in rows:
    if "token_maps" in r:
      t = r["token_maps"]
      print(f"  {r['stage']}'s {t['maps']} token-side linear maps alone (same shapes, "
            f"forward+backward, nothing else): {t['seconds']:.3f} s, "
            f"{t['flops'] / t['seconds'] / peak:.1%} of the peak -- "
            f"{t['seconds'] / r['seconds']:.0%} of the stage's {r['seconds']:.3f} s",
            flush=True)
  if differs:
    print(f"  (performed: the share of the peak counting the MACs this form performs, "
          f"{sum(performed.values()) / 1e9:.3f} G per image against the paper's "
          f"{prof['macs'] / 1e9:.3f} G: the tuned projector folds its query map into the keys)",
          flush=True)
  return figures


def breakdown_figures(prof: dict, rows: list[dict], peak: float,
                      performed: dict[str, int]) -> dict:
  """{stage: {"seconds", "of_peak" (paper MACs), "of_peak_performed"[, "token_maps_s"]}}: the
  stage table's figures (print_breakdown prints them; the JSON's runs carry them, key
  "stages"). Shares unrounded, seconds as timed."""
  figures = {}
  for r in rows:
    per_mac = 6 * _BATCH.value / r["seconds"] / peak  # share of the peak per MAC per image
    figures[r["stage"]] = dict(seconds=r["seconds"],
                               of_peak=per_mac * prof["stages"][r["stage"]]["macs"],
                               of_peak_performed=per_mac * performed[r["stage"]])
    if "token_maps" in r:
      figures[r["stage"]]["token_maps_s"] = r["token_maps"]["seconds"]
  return figures


def performed_macs(model) -> dict[str, int]:
  """MACs per stage the model performs as built (its own layers form; profile counts the
  paper's, on the 'flax' form)."""
  variables = profile.abstract_variables(model, _RESOLUTION.value)
  return profile.count_macs(model, variables, _RESOLUTION.value)


def wants_bound(config) -> bool:
  """Whether a config's run gets the VT speed-up bound: a ResNet, by default when --configs
  also names a VT config."""
  return config.model.name == "resnet" and (
      _BOUND.value if _BOUND.value is not None
      else any(c.startswith("vt_") for c in _CONFIGS.value))


def base_run(runs: list[dict], spec: str, dtype: str) -> dict | None:
  """The ResNet run (same dtype) a VT config's run is compared with: vt_rN -> resnetN."""
  return next((x for x in runs if x["dtype"] == dtype and
               x["model"] == spec.replace("vt_r", "resnet") != spec), None)


TARGET_OF_BOUND = 0.97  # the share of vt_speedup_bound the speed issue asks of a VT-ResNet


def print_step_bound(run: dict, step_s: float, without_s: float, runs: list[dict],
                     stage5_flops: dict[str, float], peak: float) -> None:
  """The bound from the train steps, and where each VT run of that depth stands against it.

  For each VT run also what its VT modules cost inside its train step (its step minus the
  stripped ResNet step: the same stem, stages 2-4 and head) and what they may cost for the run
  to reach TARGET_OF_BOUND of the bound, with the share of the peak that takes on the FLOPs
  they perform (`stage5_flops`: model name -> performed stage-5 FLOPs per train step).
  """
  print(f"  {run['model']} without stage 5 (stem, stages 2-4, head), its train step timed in "
        f"turn: {without_s:.3f} s against {step_s:.3f} s\n    -> a VT model sharing stages 1-4 "
        f"is at most {run['vt_speedup_bound']:.2f}x faster, even with VT modules that take no "
        f"time", flush=True)
  for vt in runs:
    if base_run(runs, vt["model"], vt["dtype"]) is run:
      ratio = vt["images_per_sec"] / run["images_per_sec"]
      vt["of_vt_speedup_bound"] = round(ratio / run["vt_speedup_bound"], 3)
      in_step = _BATCH.value / vt["images_per_sec"] - without_s
      needed = step_s / (TARGET_OF_BOUND * run["vt_speedup_bound"]) - without_s
      vt["vt_modules_in_step_s"] = round(in_step, 4)
      vt["vt_modules_in_step_s_for_target"] = round(needed, 4)
      flops = stage5_flops.get(vt["model"], 0)

      def share(seconds, flops=flops):
        return (f" ({flops / seconds / peak:.0%} of the peak on the {flops / 1e9:.1f} GFLOP "
                "they perform)" if flops and seconds > 0 else "")
      print(f"    {vt['model']}: {ratio:.2f}x {run['model']} = "
            f"{vt['of_vt_speedup_bound']:.2f} of that bound\n      its VT modules take "
            f"{in_step:.3f} s of its step{share(in_step)}; {TARGET_OF_BOUND} of the bound "
            f"needs <= {needed:.3f} s{share(needed)}", flush=True)
      if in_step <= 0:  # the VT step faster than the same step without any VT module
        print(f"      (a VT step faster than {run['model']} without stage 5 cannot be: the "
              f"machine's load changed during these steps; rerun on an idle machine)",
              flush=True)


def main(argv):
  del argv
  steps = 3 if _QUICK.value else _STEPS.value
  calls = 1 if _QUICK.value else 3
  # Before JAX starts: vt_jax's XLA flag, and large step buffers stay mapped
  # (vt_jax/host_allocator.py, as main does for large configs); VT_JAX_MALLOC_DEFAULTS=0
  # measures glibc's defaults instead, VT_JAX_XLA_DEFAULTS=0 XLA's own.
  not_applied = runtime.setup(sys.argv, malloc=True).malloc
  peak, how = peak_flops()
  dev = jax.devices()[0]
  print(f"device: {dev.device_kind} x{jax.device_count()} ({dev.platform}); peak "
        f"{peak / 1e9:.1f} GFLOP/s ({how}); batch {_BATCH.value}, {_RESOLUTION.value} px, "
        f"median of {steps} steps" + (", configs timed in turn" if _INTERLEAVE.value else "")
        + "; malloc " + (f"defaults ({not_applied})" if not_applied else "keeps freed memory"),
        flush=True)
  runs, bounds, breakdowns = [], {}, {}
  if _TRAIN_STEP.value:
    print(f"{'model':<12} {'dtype':<9} {'img/s':>9} {'GFLOP/s':>9} {'MFU':>6} "
          f"{'compile s':>9} {'mem MiB':>8} {'vs ResNet':>9} {'CPU-s/step':>10}", flush=True)
  for dtype in _DTYPES.value:
    configs = [load_config(spec, dtype) for spec in _CONFIGS.value]
    profs = [profile.profile(config.model, _RESOLUTION.value) for config in configs]
    augmenting = _TRAIN_STEP.value and _AUGMENT.value != "none"
    extra = [with_device_augment(c, _AUGMENT.value) for c in configs] if augmenting else []
    bounded = [i for i, c in enumerate(configs) if wants_bound(c)] if _TRAIN_STEP.value else []
    results = bench_steps(
        configs + extra + [configs[i] for i in bounded], steps,
        [None] * (len(configs) + len(extra)) + [without_stage5(configs[i]) for i in bounded]
    ) if _TRAIN_STEP.value else []
    results, augmented, stripped = (results[:len(configs)],
                                    results[len(configs):len(configs) + len(extra)],
                                    results[len(configs) + len(extra):])
    for spec, prof, r in zip(_CONFIGS.value, profs, results):
      flops = 6 * prof["macs"] * r["images_per_sec"]
      run = dict(model=spec, dtype=dtype, batch=_BATCH.value, resolution=_RESOLUTION.value,
                 images_per_sec=round(r["images_per_sec"], 3), mfu=round(flops / peak, 4))
      base = base_run(runs, spec, dtype)
      ratio = f"{run['images_per_sec'] / base['images_per_sec']:.2f}x" if base else ""
      print(f"{spec:<12} {dtype:<9} {r['images_per_sec']:>9.2f} {flops / 1e9:>9.1f} "
            f"{flops / peak:>6.1%} {r['compile_s']:>9.1f} {r['memory_bytes'] / 2**20:>8.0f} "
            f"{ratio:>9} {r['cpu_s']:>10.2f}", flush=True)
      runs.append(run)
    # FLOPs per train step the VT configs' stage 5 performs (6 x MACs x batch), for the
    # share of the peak the bound's target asks of their VT modules.
    stage5_flops = {spec: 6 * performed_macs(models.create_model(c.model))["stage5"]
                    * _BATCH.value for spec, c in zip(_CONFIGS.value, configs)
                    if c.model.name == "vt_resnet"} if bounded else {}
    for i, r in zip(bounded, stripped):
      run = next(x for x in runs if x["model"] == _CONFIGS.value[i] and x["dtype"] == dtype)
      run["vt_speedup_bound"] = round(results[i]["step_s"] / r["step_s"], 3)
      print_step_bound(run, results[i]["step_s"], r["step_s"], runs, stage5_flops, peak)
    if augmenting:
      shares = print_augment_shares(_CONFIGS.value, results, augmented,
                                    [a["augment_alone_s"] for a in augmented])
      for run, share in zip(runs[-len(configs):], shares):
        run["augment_device"] = share
    if _BREAKDOWN.value:
      for spec, config, prof in zip(_CONFIGS.value, configs, profs):
        if _FRESH.value and not not_applied and dev.platform == "cpu":
          ratio, figures = breakdown_in_child(spec, dtype, peak, wants_bound(config))
        else:
          model = models.create_model(config.model)
          figures = print_breakdown(spec, dtype, prof, breakdown(model, config, calls), peak,
                                    performed_macs(model))
          ratio = None
          if wants_bound(config):
            bound = stage5_free_bound(model, config, calls)
            print_bound(spec, bound)
            ratio = bound_ratio(bound)
        figures = {stage: {k: round(v, 4) for k, v in f.items()} for stage, f in figures.items()}
        breakdowns[f"{spec}/{dtype}"] = figures
        if ratio is not None:
          bounds[f"{spec}/{dtype}"] = ratio
        for run in runs:
          if run["model"] == spec and run["dtype"] == dtype:
            run["stages"] = figures
            if ratio is not None:
              run["vt_speedup_bound_chain"] = ratio
  if _JSON.value:
    # --notrain_step (a breakdown_in_child() child): the bounds and stage figures instead of
    # the runs' fields.
    extra = {} if _TRAIN_STEP.value else {"bounds": bounds, "breakdowns": breakdowns}
    print(json.dumps({"peak_flops": peak, "runs": runs, **extra}))


if __name__ == "__main__":
  app.run(main)
