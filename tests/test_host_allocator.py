"""vt_jax's glibc malloc settings: XLA:CPU's buffers reuse memory, only where JAX uses the CPU.

The effect is checked where it matters, through XLA: a jitted op's fresh 64 MiB output costs
one minor page fault per 4 KiB page on every call unless freed memory is kept for reuse.
Page-fault counts, not timings, so the test does not depend on the machine's load.
"""

import os
import subprocess
import sys

import pytest

from vt_jax import host_allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = 64 * 2**20 // 4096  # the output buffer's 4 KiB pages

_PROGRAM = """
import resource, time
{setup}
import jax, jax.numpy as jnp
x = jnp.ones((64, 1024, 256), jnp.float32)  # 64 MiB
f = jax.jit(lambda x: x * 2.0)
faults = []
for _ in range(40):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  y = jax.block_until_ready(f(x))
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  del y
  time.sleep(0.05)  # the runtime frees a deleted buffer on its own thread: let it
print("FAULTS", faults)
"""

def _glibc() -> bool:
  try:
    return sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
  except (ValueError, OSError):
    return False


linux_glibc = pytest.mark.skipif(not _glibc(), reason="glibc's mallopt only")


_SETUP = "from vt_jax import runtime; runtime.setup()"  # what the entry points run first


def _faults(env_extra: dict, setup: str = _SETUP) -> list[int]:
  env = {k: v for k, v in os.environ.items() if k != host_allocator.ENV_SWITCH}
  env.update(env_extra, PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, "-c", _PROGRAM.format(setup=setup)], env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("FAULTS")][-1]
  return [int(v) for v in line.split("[")[1].rstrip("]").split(",")]


@linux_glibc
def test_xla_buffers_reuse_memory_on_cpu():
  faults = _faults({"JAX_PLATFORMS": "cpu", host_allocator.ENV_SWITCH: "1"})
  # The first calls may grow the heap while freed buffers are still in flight; after that
  # fresh outputs land on pages already touched. Most late calls fault no page at all (a
  # loaded machine -- CI runs tests side by side -- still grows the heap now and then).
  assert sum(f < PAGES // 10 for f in faults[-10:]) >= 7, faults


@linux_glibc
@pytest.mark.parametrize("switch,setup", [
    ("0", "from vt_jax import runtime; runtime.setup(malloc=True)"),  # the switch wins
    (None, _SETUP),  # runtime.setup() alone does not ask for it
    ("1", "import vt_jax, vt_jax.models, vt_jax.train.loop"),  # importing applies nothing
])
def test_glibc_defaults_unless_requested(switch, setup):
  env = {"JAX_PLATFORMS": "cpu"}
  if switch is not None:
    env[host_allocator.ENV_SWITCH] = switch
  faults = _faults(env, setup)
  assert all(f >= 0.9 * PAGES for f in faults[-10:]), faults  # every output on fresh pages


def test_not_applied_when_an_accelerator_is_expected(monkeypatch, tmp_path):
  monkeypatch.delenv(host_allocator.ENV_SWITCH, raising=False)
  monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
  assert host_allocator.apply(True) == "JAX will use an accelerator"
  # No JAX_PLATFORMS: an installed GPU/TPU plugin (a jax_plugins namespace package) decides.
  monkeypatch.delenv("JAX_PLATFORMS")
  plugin = tmp_path / "jax_plugins" / "xla_fake_gpu"
  plugin.mkdir(parents=True)
  (plugin / "__init__.py").write_text("")
  monkeypatch.syspath_prepend(str(tmp_path))
  assert "jax_plugins.xla_fake_gpu" in host_allocator._accelerator_plugins()
  if _glibc():
    assert host_allocator.apply(True) == "JAX will use an accelerator"


def test_switch_and_platform_checks(monkeypatch):
  monkeypatch.setenv(host_allocator.ENV_SWITCH, "0")
  assert host_allocator.apply(True) == f"{host_allocator.ENV_SWITCH}=0"  # the switch wins
  monkeypatch.delenv(host_allocator.ENV_SWITCH)
  assert host_allocator.apply() == "not requested"
  monkeypatch.setattr(sys, "platform", "darwin")
  assert host_allocator.apply(True) == "not Linux (darwin)"


def test_worth_it_for_imagenet_size_steps_not_the_quickstart():
  from vt_jax.config_lib import files as config_files  # pylint: disable=g-import-not-at-top
  load = lambda name: config_files.load(os.path.join(ROOT, "configs", name))
  assert not host_allocator.worth_it(load("quickstart.py"))  # 32 px, width 8
  for name in ("resnet50.py", "vt_r50.py", "vt_r18.py"):  # 224 px: the stem's output >= 32 MiB
    assert host_allocator.worth_it(load(name)), name
  small = load("vt_r50.py")
  small.batch_size = 2
  assert not host_allocator.worth_it(small)  # 2 x 112^2 x 64 floats: 6 MiB
