r"""ResNet's 3x3 convolutions alone: forward, input gradient and kernel gradient, in JAX or PyTorch.

  python benchmarks/single_conv.py          # vt_jax's convolution (XLA)
  /path/to/torch-venv/bin/python benchmarks/single_conv.py --framework=torch

Where `benchmarks/train_step.py`'s breakdown and `torch_train_step.py --breakdown` say which
stage loses, this says which of a stage's three convolution products does: each 3x3,
stride-1, C -> C convolution of ResNet's stages 2-5 at 224 px (56x56x64 ... 7x7x512, batch 32)
is timed as its forward, its gradient with respect to the input and its gradient with respect
to the kernel, each alone (median of --calls). The JAX side is the convolution vt_jax's
ResNets run on these maps (`vt_jax.models.layers.conv_nhwc`, NHWC) under the benchmark's
runtime settings (vt_jax's XLA flag, glibc malloc keeping freed memory); the PyTorch side is
torch.nn.Conv2d in channels_last (NHWC strides), its recommended CPU form, with each gradient
from one backward pass through a retained graph. Both count 2 x B x H x W x C x C x 9 FLOPs
per product. The PyTorch side needs torch and absl-py in their own venv (never vt_jax
dependencies; docs/performance.md says which versions were measured).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from absl import app
from absl import flags

_FRAMEWORK = flags.DEFINE_enum("framework", "jax", ["jax", "torch"], "whose convolution to time")
_BATCH = flags.DEFINE_integer("batch", 32, "batch size")
_MAPS = flags.DEFINE_list("maps", ["56x64", "28x128", "14x256", "7x512"],
                          "SIZExCHANNELS of each 3x3 stride-1 convolution (square maps, C -> C)")
_CALLS = flags.DEFINE_integer("calls", 6, "timed calls per product (median), after one warm-up")
_JSON = flags.DEFINE_bool("json", False, "print one JSON object as the last line")

PRODUCTS = ("forward", "input_grad", "kernel_grad")


def parse_map(text: str) -> tuple[int, int]:
  """'56x64' -> (56, 64), with an error naming the flag's bad entry."""
  try:
    size, channels = (int(v) for v in text.lower().split("x"))
  except ValueError:
    raise app.UsageError(f"--maps entry {text!r} is not SIZExCHANNELS, e.g. 56x64") from None
  if size < 1 or channels < 1:
    raise app.UsageError(f"--maps entry {text!r}: size and channels must be positive")
  return size, channels


def median_seconds(call, calls: int) -> float:
  call()  # warm-up (compiles on the JAX side)
  wall = []
  for _ in range(calls):
    start = time.perf_counter()
    call()
    wall.append(time.perf_counter() - start)
  return statistics.median(wall)


def jax_products(batch: int, size: int, channels: int) -> dict:
  """The three products of vt_jax's 3x3 convolution, as calls that block until done."""
  import jax  # pylint: disable=g-import-not-at-top
  from vt_jax.models import layers  # pylint: disable=g-import-not-at-top

  x = jax.random.normal(jax.random.key(0), (batch, size, size, channels))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, channels, channels)) * 0.05
  g = jax.random.normal(jax.random.key(2), (batch, size, size, channels))

  def conv(x, kernel):
    return layers.conv_nhwc(x, kernel, 1, 1)

  # Each gradient alone: XLA drops the unused forward output of the vjp.
  fns = {"forward": (jax.jit(conv), (x, kernel)),
         "input_grad": (jax.jit(lambda x, k, g: jax.vjp(lambda x: conv(x, k), x)[1](g)[0]),
                        (x, kernel, g)),
         "kernel_grad": (jax.jit(lambda x, k, g: jax.vjp(lambda k: conv(x, k), k)[1](g)[0]),
                         (x, kernel, g))}
  return {name: (lambda f=f, args=args: jax.block_until_ready(f(*args)))
          for name, (f, args) in fns.items()}


def torch_products(batch: int, size: int, channels: int) -> dict:
  """The same three products of torch.nn.Conv2d in channels_last."""
  import torch  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  conv = torch.nn.Conv2d(channels, channels, 3, 1, 1, bias=False).to(
      memory_format=torch.channels_last)
  x = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last)
  g = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last)
  x_leaf = x.clone().requires_grad_(True)
  y_for_input = conv(x_leaf)  # graphs kept: each call below is one backward product alone
  y_for_kernel = conv(x)

  def forward():
    with torch.no_grad():
      conv(x)

  def input_grad():
    torch.autograd.grad(y_for_input, x_leaf, g, retain_graph=True)

  def kernel_grad():
    torch.autograd.grad(y_for_kernel, conv.weight, g, retain_graph=True)

  return {"forward": forward, "input_grad": input_grad, "kernel_grad": kernel_grad}


def main(argv):
  del argv
  maps = [parse_map(m) for m in _MAPS.value]
  if _FRAMEWORK.value == "jax":
    from vt_jax import runtime  # pylint: disable=g-import-not-at-top
    runtime.setup(sys.argv, malloc=True)  # before JAX starts, as train_step.py does
    import jax  # pylint: disable=g-import-not-at-top
    system, products = "vt_jax on jax " + jax.__version__, jax_products
  else:
    import torch  # pylint: disable=g-import-not-at-top
    system, products = "pytorch " + torch.__version__ + " channels_last", torch_products
  print(f"{system}: 3x3 stride-1 convolutions, batch {_BATCH.value}, median of "
        f"{_CALLS.value} calls\n  map         " +
        "".join(f"{p:>21s}" for p in PRODUCTS) + "   (ms, GFLOP/s)", flush=True)
  rows = []
  for size, channels in maps:
    flops = 2 * _BATCH.value * size * size * channels * channels * 9
    calls = products(_BATCH.value, size, channels)
    seconds = {name: median_seconds(calls[name], _CALLS.value) for name in PRODUCTS}
    rows.append(dict(map=f"{size}x{channels}", flops=flops,
                     **{f"{name}_s": round(sec, 5) for name, sec in seconds.items()}))
    print(f"  {size:>3d}x{size:<3d}x{channels:<4d}" + "".join(
        f"{1e3 * seconds[p]:>13.1f} {flops / seconds[p] / 1e9:>7.0f}" for p in PRODUCTS),
          flush=True)
  if _JSON.value:
    print(json.dumps(dict(system=system, batch=_BATCH.value, rows=rows)))


if __name__ == "__main__":
  app.run(main)
