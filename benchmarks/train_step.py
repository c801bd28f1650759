r"""Throughput of the jitted train step (img/s) for a config, on whatever devices JAX sees.

  python benchmarks/train_step.py --config=configs/vt_r18.py --batch_size=32 --steps=5
  python benchmarks/train_step.py --config=configs/quickstart.py --batch_size=64

Synthetic batches of the config's image size (data loading excluded), mesh from the config.
Prints one JSON object: compile seconds, step seconds (median), images/sec.
"""

import json
import statistics
import time

import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from vt_jax import models
from vt_jax.train import optim
from vt_jax.train import sharding as sharding_lib
from vt_jax.train import state as state_lib
from vt_jax.train import steps as steps_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file FILE[:ARG].")
_BATCH = flags.DEFINE_integer("batch_size", None, "Global batch (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps after the compiling one.")
_SIZE = flags.DEFINE_integer("image_size", None, "Default: config.data.image_size.")


def main(_):
  config = _CONFIG.value
  batch_size = _BATCH.value or config.batch_size
  config.batch_size = batch_size
  size = _SIZE.value or config.data.image_size
  mesh = sharding_lib.make_mesh(config.mesh)
  model = models.create_model(config.model)
  tx = optim.make_optimizer(config, 1000)
  init = lambda rng: state_lib.create(model, tx, rng, (size, size, 3))
  shardings = sharding_lib.state_shardings(jax.eval_shape(init, jax.random.PRNGKey(0)), mesh,
                                           config.mesh.rules)
  state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
  step = steps_lib.make_train_step(model, tx, config, 1000, mesh, shardings)
  rng = np.random.default_rng(0)
  batch = jax.device_put({
      "image": rng.normal(size=(batch_size, size, size, 3)).astype(np.float32),
      "label": rng.integers(0, config.model.num_classes, batch_size).astype(np.int32),
      "valid": np.ones(batch_size, np.float32)}, sharding_lib.batch_sharding(mesh))
  t = time.perf_counter()
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(_STEPS.value):
    t = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  median = statistics.median(times)
  print(json.dumps(dict(model=config.model.name, depth=config.model.depth, image_size=size,
                        batch_size=batch_size, devices=jax.device_count(),
                        dtype=config.model.dtype, compile_s=round(compile_s, 2),
                        step_s=round(median, 4), images_per_sec=round(batch_size / median, 1))))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
