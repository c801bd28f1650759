"""Device mesh and the shardings of the train state, from rules (big_vision style).

The mesh has two axes: 'data' (the batch is split over it) and 'model' (parameters and
optimizer state are split over it, FSDP-style; size 1 = replicated). Which state leaf is
sharded how is declared in config.mesh.rules: (regex on the leaf's '/'-joined path,
strategy), first match wins. The path is jax.tree_util.keystr's simple form, e.g.
`params/backbone/stage2/block1/conv1/kernel` or `opt_state/2/0/trace/head/fc/kernel`.
"""

from __future__ import annotations

import re
from typing import Sequence

import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA, MODEL = "data", "model"


def make_mesh(mesh_config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None
              ) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  model = int(mesh_config.model)
  data = int(mesh_config.data)
  if model < 1 or n % model:
    raise ValueError(f"config.mesh.model={model} must divide the {n} devices")
  if data == -1:
    data = n // model
  if data * model != n:
    raise ValueError(f"config.mesh.data={mesh_config.data} x config.mesh.model={model} "
                     f"!= {n} devices; set data=-1 to use all remaining devices")
  # mesh_utils orders devices so neighbouring mesh positions are physically close (TPU/GPU).
  try:
    grid = mesh_utils.create_device_mesh((data, model), devices)
  except Exception:  # noqa: BLE001 -- CPU/odd topologies: plain order is as good as any
    grid = np.asarray(devices).reshape(data, model)
  return Mesh(grid, (DATA, MODEL))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fsdp_spec(shape, axis_size: int) -> P:
  """Shards the largest dim divisible by the model axis; replicates if none is."""
  if axis_size == 1:
    return P()
  for d in sorted(range(len(shape)), key=lambda i: -shape[i]):
    if shape[d] % axis_size == 0:
      spec = [None] * len(shape)
      spec[d] = MODEL
      return P(*spec)
  return P()


def state_shardings(abstract_state, mesh: Mesh, rules) -> object:
  """A pytree of NamedShardings matching `abstract_state` (e.g. from jax.eval_shape)."""
  compiled = [(re.compile(pattern), strategy) for pattern, strategy in rules]
  for _, strategy in compiled:
    if strategy not in ("fsdp", "replicate"):
      raise ValueError(f"config.mesh.rules: unknown strategy {strategy!r}; "
                       "choose 'fsdp' or 'replicate'")
  axis_size = mesh.shape[MODEL]

  def leaf_sharding(path, leaf):
    name = jax.tree_util.keystr(path, simple=True, separator="/")  # params/backbone/...
    for pattern, strategy in compiled:
      if pattern.fullmatch(name):
        if strategy == "fsdp":
          return NamedSharding(mesh, _fsdp_spec(getattr(leaf, "shape", ()), axis_size))
        break
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(leaf_sharding, abstract_state)
