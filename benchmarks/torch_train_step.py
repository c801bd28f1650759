r"""PyTorch anchor: torchvision ResNet's SGD train step, images/s on this machine's CPU.

  /path/to/torch-venv/bin/python benchmarks/torch_train_step.py --model=resnet50 --batch=32
  /path/to/torch-venv/bin/python benchmarks/torch_train_step.py --model=resnet18 --channels_last

The same step as vt_jax's (forward, cross-entropy, backward, SGD with momentum 0.9 and weight
decay), float32, synthetic batch. `--channels_last` puts the model and the batch in PyTorch's
channels_last memory format (NHWC strides), its recommended form for convolutions on CPU
(https://pytorch.org/tutorials/intermediate/memory_format_tutorial.html). Prints one JSON line: images/s (median step) and CPU-seconds
per step (all threads). `--breakdown` also times each stage alone, forward + backward
(gradients w.r.t. its parameters and, after the stem, its input), as `python
benchmarks/train_step.py`'s breakdown does for vt_jax's ResNets, and prints the rows before
the JSON line, which then carries "stages": {name: seconds}; stage1 is the stem (7x7 conv,
BatchNorm, ReLU, max-pool), stage2-5 are torchvision's layer1-4, head the pooling and the
dense layer. Needs torch, torchvision and absl-py in their own venv (never vt_jax
dependencies; docs/performance.md says which versions were measured).
"""

import json
import statistics
import time

from absl import app
from absl import flags
import torch
import torchvision

_MODEL = flags.DEFINE_string("model", "resnet18", "torchvision.models name")
_BATCH = flags.DEFINE_integer("batch", 32, "batch size")
_STEPS = flags.DEFINE_integer("steps", 5, "timed steps (median) after two warm-up steps")
_SIZE = flags.DEFINE_integer("size", 224, "image size")
_CHANNELS_LAST = flags.DEFINE_bool("channels_last", False, "model and batch in "
                                   "torch.channels_last memory format (NHWC strides)")
_BREAKDOWN = flags.DEFINE_bool("breakdown", False, "also time each stage alone, forward + "
                               "backward, as benchmarks/train_step.py's breakdown does")
_CALLS = flags.DEFINE_integer("calls", 3, "timed calls per stage (median) with --breakdown")


def stages(model) -> list[tuple[str, torch.nn.Module]]:
  """A torchvision ResNet as vt_jax's breakdown names its parts."""
  stem = torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
  head = torch.nn.Sequential(model.avgpool, torch.nn.Flatten(1), model.fc)
  return ([("stage1", stem)] + [(f"stage{i + 2}", getattr(model, f"layer{i + 1}"))
                                 for i in range(4)] + [("head", head)])


def breakdown(model, x, memory_format) -> dict[str, float]:
  """Median seconds of each stage's forward + backward alone, on its real input's shape.

  The loss is 1e-6 x the sum of the stage's squared outputs (train_step.py's); each stage
  reads a random input of the shape the previous stage gives, in `memory_format`.
  """
  with torch.no_grad():
    shapes, h = [], x
    for _, module in stages(model):
      shapes.append(h.shape)
      h = module(h)
  seconds = {}
  for (name, module), shape in zip(stages(model), shapes):
    inp = torch.randn(shape)
    if inp.dim() == 4:
      inp = inp.contiguous(memory_format=memory_format)
    inp.requires_grad_(name != "stage1")  # the stem's input is the image

    def call(module=module, inp=inp):
      module.zero_grad(set_to_none=True)
      (module(inp).pow(2).sum() * 1e-6).backward()

    call()
    wall = []
    for _ in range(_CALLS.value):
      t = time.perf_counter()
      call()
      wall.append(time.perf_counter() - t)
    seconds[name] = statistics.median(wall)
  return seconds


def main(argv):
  del argv
  torch.manual_seed(0)
  model = getattr(torchvision.models, _MODEL.value)(num_classes=1000).train()
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=4e-5)
  x = torch.randn(_BATCH.value, 3, _SIZE.value, _SIZE.value)
  if _CHANNELS_LAST.value:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  y = torch.randint(0, 1000, (_BATCH.value,))

  def step():
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()

  step()
  step()
  wall, cpu = [], []
  for _ in range(_STEPS.value):
    t, c = time.perf_counter(), time.process_time()
    step()
    wall.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
  med = statistics.median(wall)
  extra = {}
  if _BREAKDOWN.value:
    fmt = torch.channels_last if _CHANNELS_LAST.value else torch.contiguous_format
    seconds = breakdown(model, x, fmt)
    total = sum(seconds.values())
    print(f"  {_MODEL.value} pytorch ({'channels_last' if _CHANNELS_LAST.value else 'default'}"
          f"): each stage forward+backward alone, batch {_BATCH.value}\n"
          "  stage     seconds  time %")
    for name, sec in seconds.items():
      print(f"  {name:8s} {sec:8.3f} {100 * sec / total:6.1f}%")
    extra["stages"] = {name: round(sec, 4) for name, sec in seconds.items()}
  print(json.dumps(dict(system="pytorch " + torch.__version__, model=_MODEL.value,
                        memory_format="channels_last" if _CHANNELS_LAST.value else "default",
                        batch=_BATCH.value, threads=torch.get_num_threads(),
                        step_s=round(med, 3), cpu_s=round(statistics.median(cpu), 3),
                        images_per_sec=round(_BATCH.value / med, 2), **extra)))


if __name__ == "__main__":
  app.run(main)
