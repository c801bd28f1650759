r"""One ResNet-50 convolution, forward + backward, in JAX (XLA CPU) or PyTorch: who is slower?

  python benchmarks/single_conv.py --framework=jax
  /path/to/torch-venv/bin/python benchmarks/single_conv.py --framework=torch

Times, for each layer, the gradient of sum(conv(x) * g) w.r.t. the input and the kernel (the
three convolutions a train step runs per layer), float32, NHWC in JAX and NCHW in PyTorch
(each framework's native layout), and prints GFLOP/s (6 x MACs per step) and CPU-seconds per
step (all threads; steadier than wall-clock on a shared machine). Run both frameworks back to
back on the same machine and compare: if XLA's rate is far below PyTorch's on the same layer,
the gap of the whole ResNet train step is the convolution's, not the model code's.
PyTorch needs absl-py in its venv; it is never a vt_jax dependency.
"""

from __future__ import annotations

import json
import statistics
import time

from absl import app
from absl import flags

_FRAMEWORK = flags.DEFINE_enum("framework", "jax", ["jax", "torch"], "which to time")
_BATCH = flags.DEFINE_integer("batch", 32, "batch size")
_CALLS = flags.DEFINE_integer("calls", 5, "timed calls (median) after a warm-up")

# (name, spatial size, input channels, output channels, kernel, stride): ResNet-50 layers.
LAYERS = [("stage2 3x3 64->64", 56, 64, 64, 3, 1),
          ("stage2 1x1 64->256", 56, 64, 256, 1, 1),
          ("stage4 3x3 256->256", 14, 256, 256, 3, 1),
          ("stem 7x7/2 3->64", 224, 3, 64, 7, 2)]


def _measure(fn) -> tuple[float, float]:
  fn()
  wall, cpu = [], []
  for _ in range(_CALLS.value):
    t, c = time.perf_counter(), time.process_time()
    fn()
    wall.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
  return statistics.median(wall), statistics.median(cpu)


def _jax_step(size, cin, cout, k, s):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  b = _BATCH.value
  x = jax.random.normal(jax.random.key(0), (b, size, size, cin))
  w = jax.random.normal(jax.random.key(1), (k, k, cin, cout)) * 0.05

  def loss(x, w):
    y = jax.lax.conv_general_dilated(x, w, (s, s), [(k // 2, k // 2)] * 2,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(y * y)

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return lambda: jax.block_until_ready(grad(x, w))


def _torch_step(size, cin, cout, k, s):
  import torch  # pylint: disable=g-import-not-at-top
  b = _BATCH.value
  x = torch.randn(b, cin, size, size, requires_grad=True)
  conv = torch.nn.Conv2d(cin, cout, k, s, k // 2, bias=False)

  def step():
    x.grad = None
    conv.weight.grad = None
    y = conv(x)
    (y * y).sum().backward()
  return step


def main(argv):
  del argv
  make = _jax_step if _FRAMEWORK.value == "jax" else _torch_step
  rows = []
  for name, size, cin, cout, k, s in LAYERS:
    out = -(-size // s)
    macs = _BATCH.value * out * out * cout * cin * k * k
    wall, cpu = _measure(make(size, cin, cout, k, s))
    rows.append(dict(framework=_FRAMEWORK.value, layer=name, wall_s=round(wall, 4),
                     cpu_s=round(cpu, 4), gflops=round(6 * macs / wall / 1e9, 1),
                     gflop_per_cpu_s=round(6 * macs / cpu / 1e9, 1)))
    print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
  app.run(main)
