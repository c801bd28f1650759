"""The global example order: one stream of examples, the same on every topology.

Stream position g (examples counted from the start of training) holds example
`permutation(seed, epoch)[g mod N]` of epoch `g div N`; global batch s is positions
[s*B, (s+1)*B). Nothing here depends on the number of processes or devices: each process
computes the example indices of exactly the rows its devices hold (`local_rows`), so any
layout reads the same examples into the same rows, and a resumed run seeks to position
`step * B` without reading anything first.

The permutation is a keyed bijection of [0, N) computed per position in O(1): a balanced
Feistel network on the smallest even number of bits covering N, with cycle walking (values
that land in [N, 2^bits) are encrypted again until they fall in [0, N); since the network is
a bijection of [0, 2^bits), this restricts to a bijection of [0, N)). Hand-written instead of
numpy's `Generator.permutation` because numpy does not promise the same stream across
versions and a permutation materialised per epoch costs O(N) memory and time on every
resume; the round function is explicit uint64 arithmetic (splitmix64's finaliser), which
every numpy version computes identically. The golden values in the tests pin it: changing
any constant here changes the order of every run, so bump ORDER_VERSION with it.
"""

from __future__ import annotations

import numpy as np

ORDER_VERSION = 1  # recorded in checkpoints; a different order refuses to resume
_ROUNDS = 6
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
  """splitmix64's output function on a Python int (exact, any platform)."""
  x = (x + 0x9E3779B97F4A7C15) & _MASK64
  x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
  x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
  return x ^ (x >> 31)


def _round_keys(seed: int, epoch: int) -> list[int]:
  base = _splitmix64(_splitmix64(int(seed) & _MASK64) ^ (int(epoch) & _MASK64))
  return [_splitmix64(base + r) for r in range(_ROUNDS)]


def _mix(values: np.ndarray, key: int) -> np.ndarray:
  """splitmix64's finaliser on uint64 arrays (wrapping multiplication is exact)."""
  z = values + np.uint64(key)
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return z ^ (z >> np.uint64(31))


def _half_bits(n: int) -> int:
  bits = max(2, int(n - 1).bit_length())
  return (bits + 1) // 2


def _feistel(x: np.ndarray, keys: list[int], half: int) -> np.ndarray:
  mask = np.uint64((1 << half) - 1)
  left, right = x >> np.uint64(half), x & mask
  for key in keys:
    left, right = right, left ^ (_mix(right, key) & mask)
  return (left << np.uint64(half)) | right


def permute(indices, num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """permutation(seed, epoch)[indices] for a bijection of [0, num_examples); int64 array."""
  if num_examples < 1:
    raise ValueError(f'num_examples={num_examples}: a split needs at least one example')
  x = np.asarray(indices, dtype=np.int64)
  if x.size and (x.min() < 0 or x.max() >= num_examples):
    raise ValueError(f'indices outside [0, {num_examples})')
  keys, half = _round_keys(seed, epoch), _half_bits(num_examples)
  out = x.astype(np.uint64).reshape(-1)
  todo = np.arange(out.size)
  while todo.size:  # cycle walking: at most a few passes (2^bits < 4N)
    out[todo] = _feistel(out[todo], keys, half)
    todo = todo[out[todo] >= np.uint64(num_examples)]
  return out.astype(np.int64).reshape(x.shape)


def train_examples(positions, num_examples: int, seed: int):
  """(epoch, example index) int64 arrays of stream positions `positions`."""
  positions = np.asarray(positions, dtype=np.int64)
  epochs, offsets = np.divmod(positions, num_examples)
  examples = np.empty_like(positions)
  for epoch in np.unique(epochs):
    at = epochs == epoch
    examples[at] = permute(offsets[at], num_examples, seed, int(epoch))
  return epochs, examples


def local_rows(sharding, global_batch: int, devices=None) -> np.ndarray:
  """Sorted global batch rows held by `devices` (default: this process's devices).

  Read from the sharding's device -> index map of the global batch shape, so device order,
  a data axis spread unevenly over processes, and replication over a model axis are all
  handled by the sharding itself.
  """
  if devices is None:
    index_map = sharding.addressable_devices_indices_map((global_batch,))
  else:
    full = sharding.devices_indices_map((global_batch,))
    index_map = {d: full[d] for d in devices}
  rows = set()
  for index in index_map.values():
    rows.update(range(*index[0].indices(global_batch)))
  return np.array(sorted(rows), dtype=np.int64)
