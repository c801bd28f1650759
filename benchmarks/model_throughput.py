"""Forward and forward+backward throughput of ResNets vs VT-ResNets, in one run.

    python benchmarks/model_throughput.py                        # R18 vs VT-R18 at 224
    python benchmarks/model_throughput.py --models=resnet50,vt_r50 --batch=64 --dtype=bfloat16

Prints, per model: MACs/image (the profile tool's count), images/s for inference
and for a training-like step (forward + backward, no optimizer), XLA's peak
temporary memory of the compiled step, and each VT model's speed ratio to the
ResNet of the same depth measured in the same process. Ratios are what to quote:
absolute figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from vt_jax import models, profile
from vt_jax.config_lib import files as config_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_model_config(name: str, dtype: str):
  cfg = config_files.load(os.path.join(ROOT, "configs", f"{name}.py")).model
  cfg.dtype = dtype
  return cfg


def time_fn(fn, args, steps: int) -> float:
  """Median seconds per call after compilation and one warm-up call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def bench(name: str, batch: int, resolution: int, dtype: str, steps: int) -> dict:
  cfg = load_model_config(name, dtype)
  model = models.create_model(cfg)
  images = jax.random.normal(jax.random.key(0), (batch, resolution, resolution, 3))
  labels = jnp.arange(batch) % cfg.num_classes
  variables = jax.jit(lambda x: model.init(jax.random.key(1), x))(images)

  @jax.jit
  def forward(v, x):
    return model.apply(v, x, train=False)

  def loss_fn(params, batch_stats, x, y):
    logits, state = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
    loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
    return loss, state

  @jax.jit
  def train_like(v, x, y):
    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        v["params"], v["batch_stats"], x, y)
    return loss, grads, state

  compiled = train_like.lower(variables, images, labels).compile()
  mem = compiled.memory_analysis()
  temp_mb = getattr(mem, "temp_size_in_bytes", 0) / 2**20 if mem is not None else float("nan")
  fwd = time_fn(forward, (variables, images), steps)
  step = time_fn(train_like, (variables, images, labels), steps)
  macs = profile.profile(cfg, resolution)["macs"]
  return dict(name=name, gmacs=macs / 1e9, fwd_ips=batch / fwd, step_ips=batch / step,
              temp_mb=temp_mb)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="resnet18,vt_r18",
                      help="comma-separated config names from configs/")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--resolution", type=int, default=224)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--steps", type=int, default=5, help="timed calls per measurement")
  args = parser.parse_args()
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, batch {args.batch}, "
        f"{args.resolution}px, {args.dtype}, median of {args.steps} calls")
  results = [bench(n, args.batch, args.resolution, args.dtype, args.steps)
             for n in args.models.split(",")]
  print(f"{'model':<12} {'GMACs/img':>10} {'infer img/s':>12} {'train img/s':>12} "
        f"{'step temp MiB':>14} {'vs ResNet (train)':>18}")
  by_name = {r["name"]: r for r in results}
  for r in results:
    base = by_name.get(r["name"].replace("vt_r", "resnet"))
    ratio = f"{r['step_ips'] / base['step_ips']:.2f}x" if base and base is not r else ""
    print(f"{r['name']:<12} {r['gmacs']:>10.3f} {r['fwd_ips']:>12.1f} {r['step_ips']:>12.1f} "
          f"{r['temp_mb']:>14.1f} {ratio:>18}")


if __name__ == "__main__":
  main()
