r"""Where one train step's time goes, op by op: XLA's own trace of the compiled step.

  python benchmarks/op_profile.py --configs=resnet50            # top ops, per-stage totals
  python benchmarks/op_profile.py --configs=vt_r50 --match=stage5 --top=30

Compiles the same train step as benchmarks/train_step.py (synthetic batch; --batch,
--resolution, --dtypes as there), runs it twice, then once under jax.profiler with a
perfetto trace, and joins each traced XLA op with the compiled HLO's metadata: its shape and
the model code it came from (e.g. `jvp(ResNet)/backbone/stage2/block1/conv3/dot_general`;
`transpose(jvp(...))` marks the backward pass). It prints
  * the step's wall-clock time and the time of the ops the trace saw; the difference,
    "untraced", is work the trace gives no op (on XLA:CPU mostly large convolutions, which
    show up with little time of their own);
  * the top --top ops (or those whose source matches --match) with shape and source;
  * totals per op kind (XLA's fusion name without its number) and per model part
    (stage1-5 / head, forward and backward).
How the speed changes in docs/performance.md were found: a transposing copy that
took a third of ResNet-50's step stood out as `copy_bitcast_fusion` here. Needs no
TensorFlow. Written for XLA:CPU, whose trace names each op by its HLO instruction; on a GPU
the trace holds kernel names, and ops it cannot join show source "?". Like the benchmark, it
sets malloc to keep freed memory first (vt_jax/host_allocator.py).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

from absl import app
from absl import flags
import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "benchmarks")):
  if path not in sys.path:
    sys.path.insert(0, path)

import train_step as bench  # pylint: disable=g-import-not-at-top,wrong-import-position

_TOP = flags.DEFINE_integer("top", 25, "how many of the slowest ops to list")
_MATCH = flags.DEFINE_string("match", None, "list only ops whose source matches this regex")

_HLO_LINE = re.compile(r"\s*(?:ROOT )?%(\S+) = (\S+) .*?op_name=\"([^\"]*)\"")
_PART = re.compile(r"\b(stage\d|head)\b")


def hlo_sources(hlo_text: str) -> dict[str, tuple[str, str]]:
  """{HLO instruction name: (shape, op_name metadata)} of a compiled module's text."""
  out = {}
  for line in hlo_text.splitlines():
    m = _HLO_LINE.match(line)
    if m:
      out[m.group(1)] = (m.group(2), m.group(3))
  return out


def traced_ops(trace_dir: str) -> collections.Counter:
  """{op name: microseconds} of the XLA ops in a jax.profiler perfetto trace."""
  (path,) = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  ops = collections.Counter()
  for e in events:
    name = e.get("name", "")
    # Python frames start with '$'; the executor's own spans enclose the ops.
    if e.get("ph") == "X" and not name.startswith("$") and "Thunk" not in name and \
        not name.startswith(("PjitFunction", "SlinkyThreadPool", "CommonPjRt")):
      ops[name] += e.get("dur", 0)
  return ops


def summarise(ops: collections.Counter, sources: dict) -> dict:
  """Per-op rows and the totals per op kind and per model part (forward / backward)."""
  rows, kinds, parts = [], collections.Counter(), collections.Counter()
  for name, us in ops.items():
    shape, source = sources.get(name, ("?", ""))
    source = source.replace("jit(<lambda>)/", "").replace("jit(step_fn)/", "")
    rows.append(dict(op=name, seconds=us / 1e6, shape=shape, source=source))
    kinds[re.sub(r"\.\d+$", "", name)] += us / 1e6
    m = _PART.search(source)
    direction = "backward" if "transpose(jvp" in source else "forward"
    parts[(m.group(1) if m else "other", direction)] += us / 1e6
  rows.sort(key=lambda r: -r["seconds"])
  return dict(rows=rows, kinds=kinds, parts=parts)


def profile_step(prepared: dict) -> tuple[float, dict]:
  for _ in range(2):  # warm: caches, allocator
    bench.time_step(prepared)
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      bench.time_step(prepared)
    wall = prepared["times"][-1]
    ops = traced_ops(trace_dir)
  return wall, summarise(ops, hlo_sources(prepared["compiled"].as_text()))


def print_profile(spec: str, dtype: str, wall: float, summary: dict) -> None:
  traced = sum(r["seconds"] for r in summary["rows"])
  print(f"{spec} {dtype}: step {wall:.3f} s wall; traced ops {traced:.3f} s; untraced "
        f"{max(wall - traced, 0):.3f} s (work the trace gives no op, e.g. large convolutions)", flush=True)
  rows = summary["rows"]
  if _MATCH.value:
    rows = [r for r in rows if re.search(_MATCH.value, r["source"])]
  print(f"  {'ms':>8} {'% step':>6}  {'op':<30} {'shape':<30} source")
  for r in rows[:_TOP.value]:
    print(f"  {1e3 * r['seconds']:>8.1f} {r['seconds'] / wall:>6.1%}  {r['op'][:30]:<30} "
          f"{r['shape'][:30]:<30} {r['source'][-90:]}")
  print("  by op kind:")
  for kind, s in summary["kinds"].most_common(12):
    print(f"  {1e3 * s:>8.1f} {s / wall:>6.1%}  {kind}")
  print("  by model part (forward / backward, ms):")
  for part in sorted({p for p, _ in summary["parts"]}):
    fwd, bwd = (1e3 * summary["parts"][(part, d)] for d in ("forward", "backward"))
    print(f"  {part:<8} {fwd:>8.1f} {bwd:>8.1f}")


def main(argv):
  del argv
  bench.runtime.setup(sys.argv, malloc=True)  # before JAX starts, as benchmarks/train_step.py
  for dtype in flags.FLAGS.dtypes:
    for spec in flags.FLAGS.configs:
      prepared = bench.prepare_step(bench.load_config(spec, dtype))
      wall, summary = profile_step(prepared)
      print_profile(spec, dtype, wall, summary)


if __name__ == "__main__":
  flags.FLAGS.set_default("configs", ["resnet50"])
  app.run(main)
