"""glibc malloc settings that let XLA:CPU reuse its buffers' memory from one step to the next.

XLA:CPU allocates every executable's output and temporary buffers with the C library's
allocator and frees them when the step ends. glibc serves allocations above 32 MiB (and
anything a worker thread asks for above 64 MiB) with a fresh mmap and returns them with
munmap, so each train step touches its whole working set as new pages, one page fault per
4 KiB (measured: docs/performance.md).

vt_jax can therefore tell glibc (mallopt) to keep freed memory for reuse:
  * M_ARENA_MAX = 1: XLA's worker threads allocate from the main heap, the one that can grow
    past 64 MiB without mmap;
  * M_MMAP_MAX = 0: large blocks come from that heap, not from mmap;
  * M_TRIM_THRESHOLD = unlimited: freed memory is not handed back to the kernel.
It makes large CPU train steps faster (measured: docs/performance.md); numerics are
untouched (only where buffers live changes). The costs: compiling takes longer (XLA's
parallel code generation then shares one malloc arena), the process's resident memory stays
at its peak instead of dropping between steps, and all threads share one arena. Buffers
under glibc's 32 MiB mmap threshold were never mmapped, so small models only pay.

So it is applied where it pays:
  * `python -m vt_jax.main` applies it when `worth_it(config)`: a train step's largest
    activations (the stem's output: batch x (size/2)^2 x width floats) reach 32 MiB, e.g.
    ImageNet-size configs, not the quickstart;
  * benchmarks/train_step.py applies it (large steps by design); benchmarks/stability.py
    when `worth_it` for its --resolution and --batch;
  * VT_JAX_MALLOC_DEFAULTS=1 applies it in every entry point's `vt_jax.runtime.setup()`
    (and in your own training code's, if it calls that), and VT_JAX_MALLOC_DEFAULTS=0 keeps
    glibc's defaults everywhere. Importing vt_jax does not apply it.
and only when all of these hold: Linux with glibc (mallopt is glibc's); JAX will compute on
the CPU (JAX_PLATFORMS starts with `cpu`, or is unset and no GPU/TPU plugin is installed:
with an accelerator the host only feeds it, its device memory has its own allocator, and
many input-pipeline threads are better served by glibc's per-thread arenas); and it is
called before JAX starts (threads that already allocated keep their own arenas).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys

ENV_SWITCH = "VT_JAX_MALLOC_DEFAULTS"
# mallopt parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0),
            # glibc stores the int as a size_t: -1 is the largest threshold, i.e. never trim.
            (M_TRIM_THRESHOLD, -1))


def _accelerator_plugins() -> list[str]:
  """Installed JAX plugins for GPUs/TPUs (what JAX would pick over the CPU)."""
  found = []
  if importlib.util.find_spec("libtpu") is not None:
    found.append("libtpu")
  spec = importlib.util.find_spec("jax_plugins")
  if spec is not None and spec.submodule_search_locations:
    found += [f"jax_plugins.{m.name}" for m in pkgutil.iter_modules(
        spec.submodule_search_locations)]
  try:
    found += [ep.name for ep in importlib.metadata.entry_points(group="jax_plugins")]
  except TypeError:  # pragma: no cover - Python < 3.10's entry_points() takes no group
    pass
  return found


def _cpu_is_the_device() -> bool:
  platforms = os.environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  return not _accelerator_plugins()


MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's largest dynamic mmap threshold (64-bit)


def worth_it(config) -> bool:
  """Whether a train step's largest buffers reach glibc's mmap threshold (see above)."""
  model, data = config.get("model", {}), config.get("data", {})
  size = data.get("image_size") or 0
  width = model.get("width") or 64
  itemsize = 2 if str(model.get("dtype", "float32")) in ("bfloat16", "float16") else 4
  stem_bytes = config.get("batch_size", 0) * (size // 2) ** 2 * width * itemsize
  return stem_bytes >= MMAP_THRESHOLD_BYTES


def apply(wanted: bool = False) -> str | None:
  """Sets SETTINGS with mallopt if wanted (or VT_JAX_MALLOC_DEFAULTS=1) and the conditions
  above hold; returns why not, or None when applied."""
  switch = os.environ.get(ENV_SWITCH, "")
  if switch == "0":
    return f"{ENV_SWITCH}=0"
  if not (wanted or switch == "1"):
    return "not requested"
  if not sys.platform.startswith("linux"):
    return f"not Linux ({sys.platform})"
  try:
    libc = ctypes.CDLL(None)
    mallopt = libc.mallopt
    libc.gnu_get_libc_version  # pylint: disable=pointless-statement
  except (OSError, AttributeError):
    return "not glibc"
  if not _cpu_is_the_device():
    return "JAX will use an accelerator"
  mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  failed = [param for param, value in SETTINGS if mallopt(param, value) != 1]
  return f"mallopt refused {failed}" if failed else None
