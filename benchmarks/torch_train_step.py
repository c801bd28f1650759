r"""PyTorch anchor: torchvision ResNet's SGD train step, images/s on this machine's CPU.

  /path/to/torch-venv/bin/python benchmarks/torch_train_step.py --model=resnet50 --batch=32
  /path/to/torch-venv/bin/python benchmarks/torch_train_step.py --model=resnet18 --channels_last

The same step as vt_jax's (forward, cross-entropy, backward, SGD with momentum 0.9 and weight
decay), float32, synthetic batch. `--channels_last` puts the model and the batch in PyTorch's
channels_last memory format (NHWC strides), its recommended form for convolutions on CPU
(https://pytorch.org/tutorials/intermediate/memory_format_tutorial.html). Prints one JSON line: images/s (median step) and CPU-seconds
per step (all threads). Needs torch, torchvision and absl-py in their own venv (never vt_jax
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
  print(json.dumps(dict(system="pytorch " + torch.__version__, model=_MODEL.value,
                        memory_format="channels_last" if _CHANNELS_LAST.value else "default",
                        batch=_BATCH.value, threads=torch.get_num_threads(),
                        step_s=round(med, 3), cpu_s=round(statistics.median(cpu), 3),
                        images_per_sec=round(_BATCH.value / med, 2))))


if __name__ == "__main__":
  app.run(main)
