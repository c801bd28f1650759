"""glibc malloc settings that let XLA:CPU reuse its buffers' memory from one step to the next.

XLA:CPU allocates every executable's output and temporary buffers with the C library's
allocator and frees them when the step ends. glibc serves allocations above 32 MiB (and
anything a worker thread asks for above 64 MiB) with a fresh mmap and returns them with
munmap, so each train step touches its whole working set (~4.4 GB for ResNet-50 at batch 32)
as new pages: one page fault per 4 KiB, about 0.6 us each here. A 100 MB elementwise op took
19 ms with fresh pages and 3.6 ms in place, and ResNet-50's train step spent ~1 s per step on
faults (2-core x86-64, batch 32, 224 px).

`import vt_jax` therefore tells glibc (mallopt) to keep freed memory for reuse:
  * M_ARENA_MAX = 1: XLA's worker threads allocate from the main heap, the one that can grow
    past 64 MiB without mmap;
  * M_MMAP_MAX = 0: large blocks come from that heap, not from mmap;
  * M_TRIM_THRESHOLD = unlimited: freed memory is not handed back to the kernel.
Measured with `python benchmarks/train_step.py` on that CPU: ResNet-50's train step 9.0 ->
10.1 img/s and VT-R50's 8.8 -> 11.1. Numerics are untouched (only where buffers live
changes). The cost: the process's resident memory stays at its peak instead of dropping
between steps (ResNet-50's peak RSS over 10 steps: 5.5 GB with these settings, 5.7 GB
without), and all threads share one malloc arena.

Applied only when all of these hold:
  * Linux with glibc (mallopt is glibc's);
  * the environment variable VT_JAX_MALLOC_DEFAULTS is not `0`;
  * JAX will compute on the CPU: JAX_PLATFORMS starts with `cpu`, or is unset and no GPU/TPU
    plugin is installed. With an accelerator the host only feeds it, its device memory has
    its own allocator, and many input-pipeline threads are better served by glibc's
    per-thread arenas.
Call it before JAX starts (importing vt_jax first does): threads that already allocated keep
their own arenas.
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


def apply() -> str | None:
  """Sets SETTINGS with mallopt if the conditions above hold; returns why not, or None."""
  if os.environ.get(ENV_SWITCH, "1") == "0":
    return f"{ENV_SWITCH}=0"
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
