r"""Training runs -> a markdown table and an accuracy-vs-MACs plot (the paper's Fig. 9).

  python -m vt_jax.report /tmp/abl                     # every workdir under a sweep root
  python -m vt_jax.report DIR1 DIR2 ... [--out=DIR] [--metric=top1]

Runs are grouped by their workdir's name without its `seed=N` part (the names vt_jax.sweep
gives: `seed=1,tokenizer=pooling` -> `tokenizer=pooling`); the runs of a group must have the
same config but for the seed, else this stops naming the fields that differ. Per group:
final eval metrics (the last eval record of metrics.jsonl) as mean ± sample std over the
runs, MACs and parameters (vt_jax.profile at the data's image size), and training minutes:
the training loop's wall time, summed from the logged img/s of every train record (compile
included, startup and the final evaluation not). A run the sweep has not finished
(sweep_run.json not 'done') or with no eval record is listed below the table, not averaged.
Writes OUT/report.md and OUT/accuracy_vs_macs.png (OUT: the runs' common parent directory).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys

from absl import app
from absl import flags

_OUT = None
_METRIC = None


def define_flags() -> None:
  """absl flags of the command line; defined only when run as a program, so that the
  module imports beside others (tests, the training entry point) without flag clashes."""
  global _OUT, _METRIC  # pylint: disable=global-statement
  _OUT = flags.DEFINE_string("out", None, "Where report.md and accuracy_vs_macs.png go "
                             "(default: the runs' common parent directory).")
  _METRIC = flags.DEFINE_string("metric", "top1", "Eval metric plotted and sorted on "
                                "(top1, ema_top1, top5...).")


METRICS = ("top1", "ema_top1", "top5")  # shown as % when present
_SEED = re.compile(r"(^|,)seed=\d+(?=,|$)")


def find_workdirs(paths) -> list[str]:
  """Workdirs (directories with a config.json) among `paths` and their direct children."""
  found = []
  for p in paths:
    p = os.path.abspath(p)
    if os.path.exists(os.path.join(p, "config.json")):
      found.append(p)
    elif os.path.isdir(p):
      children = sorted(os.path.join(p, c) for c in os.listdir(p)
                        if os.path.exists(os.path.join(p, c, "config.json")))
      if not children:
        raise FileNotFoundError(f"{p}: neither a workdir (no config.json) nor a directory "
                                "of workdirs")
      found += children
    else:
      raise FileNotFoundError(f"{p} does not exist")
  return found


def read_records(workdir: str) -> list[dict]:
  """metrics.jsonl with the last record kept per (step, split) (a resumed run repeats some)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  by_key = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        r = json.loads(line)
        by_key[(r["step"], r["split"])] = r
  return sorted(by_key.values(), key=lambda r: (r["step"], r["split"]))


def train_minutes(records, batch_size: int) -> float:
  """Wall time of the training loop from the train records' img/s (each record covers the
  steps since the previous one)."""
  seconds, previous = 0.0, 0
  for r in records:
    if r["split"] == "train" and r.get("images_per_sec", 0) > 0:
      seconds += (r["step"] - previous) * batch_size / r["images_per_sec"]
      previous = r["step"]
  return seconds / 60


def group_name(workdir: str) -> str:
  name = _SEED.sub("", os.path.basename(workdir)).strip(",")
  return name or "baseline"


def load_run(workdir: str) -> dict:
  from vt_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  config = ckpt_lib.read_config(workdir)
  records = read_records(workdir)
  evals = [r for r in records if r["split"] == "eval"]
  status_path = os.path.join(workdir, "sweep_run.json")
  unfinished = ""
  if os.path.exists(status_path):
    with open(status_path) as f:
      status = json.load(f).get("status")
    if status != "done":
      unfinished = f"sweep status {status!r}"
  if not evals:
    unfinished = unfinished or "no eval record in metrics.jsonl"
  return dict(workdir=workdir, group=group_name(workdir), config=config,
              final=evals[-1] if evals else {}, unfinished=unfinished,
              minutes=train_minutes(records, int(config.batch_size)))


def _mean_std(values):
  n = len(values)
  mean = sum(values) / n
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
  return mean, std


def _fmt(mean, std, scale=1.0, digits=1):
  if math.isnan(std):
    return f"{mean * scale:.{digits}f}"
  return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def summarise(runs) -> list[dict]:
  """One row per group (first-appearance order) of finished runs."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from vt_jax import profile  # pylint: disable=g-import-not-at-top
  groups = {}
  for run in runs:
    if not run["unfinished"]:
      groups.setdefault(run["group"], []).append(run)
  rows = []
  for name, members in groups.items():
    ref = traverse_util.flatten_dict(members[0]["config"].to_dict(), sep=".")
    ref.pop("seed", None)
    for other in members[1:]:
      cfg = traverse_util.flatten_dict(other["config"].to_dict(), sep=".")
      cfg.pop("seed", None)
      diff = sorted(k for k in set(ref) | set(cfg) if ref.get(k) != cfg.get(k))
      if diff:
        raise ValueError(f"{members[0]['workdir']} and {other['workdir']} are grouped as "
                         f"{name!r} (same name but the seed) but their configs differ in "
                         f"{diff}; rename or report them separately")
    model = members[0]["config"].model
    prof = profile.profile(model, resolution=int(members[0]["config"].data.image_size))
    row = dict(group=name, runs=len(members), macs=prof["macs"], params=prof["params"],
               model=prof["model"], minutes=_mean_std([m["minutes"] for m in members]),
               workdirs=[m["workdir"] for m in members])
    for metric in METRICS:
      values = [m["final"][metric] for m in members if metric in m["final"]]
      if len(values) == len(members):
        row[metric] = _mean_std(values)
    rows.append(row)
  return rows


def markdown(rows, runs, metric: str) -> str:
  shown = [m for m in METRICS if any(m in r for r in rows)]
  head = (["variant", "runs"] + [f"{m} (%)" for m in shown] +
          ["MMACs", "params (k)", "train min"])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [r["group"], str(r["runs"])]
    cells += [_fmt(*r[m], scale=100) if m in r else "" for m in shown]
    cells += [f"{r['macs'] / 1e6:.2f}", f"{r['params'] / 1e3:.1f}", _fmt(*r["minutes"])]
    lines.append("| " + " | ".join(cells) + " |")
  left = [f"- {run['workdir']}: {run['unfinished']}" for run in runs if run["unfinished"]]
  if left:
    lines += ["", "Not averaged (unfinished):"] + left
  if metric not in shown:
    lines += ["", f"(no run has the metric {metric!r})"]
  return "\n".join(lines)


def plot(rows, metric: str, path: str) -> None:
  """Accuracy vs MACs, one point per group with its std as an error bar (Fig. 9)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8.0, 4.2))
  colours = plt.get_cmap("tab20").colors
  for i, r in enumerate(rows):
    if metric not in r:
      continue
    mean, std = r[metric]
    vt = r["model"].startswith("vt")
    # Variants often share a MAC count: one colour and legend entry each, no inline labels.
    ax.errorbar(r["macs"] / 1e6, 100 * mean, yerr=None if math.isnan(std) else 100 * std,
                fmt="o" if vt else "s", color=colours[i % len(colours)], capsize=3, ms=6,
                label=f"{r['group']} (n={r['runs']})")
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
  ax.set_xlabel("MMACs per image")
  ax.set_ylabel(f"{metric} (%), mean ± std over seeds")
  ax.set_title("accuracy vs MACs (circles: VT-ResNet, squares: ResNet)", fontsize=9)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv) -> None:
  paths = argv[1:]
  if not paths:
    raise app.UsageError("give one or more workdirs or sweep roots: python -m vt_jax.report DIR")
  try:
    runs = [load_run(w) for w in find_workdirs(paths)]
    rows = summarise(runs)
  except (FileNotFoundError, ValueError) as e:
    print(f"FATAL {e}", file=sys.stderr)
    sys.exit(1)
  text = markdown(rows, runs, _METRIC.value)
  out = _OUT.value or os.path.commonpath([os.path.dirname(r["workdir"]) for r in runs])
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "report.md"), "w") as f:
    f.write(text + "\n")
  plot(rows, _METRIC.value, os.path.join(out, "accuracy_vs_macs.png"))
  print(text)
  print(f"\nwrote {out}/report.md and {out}/accuracy_vs_macs.png")


if __name__ == "__main__":
  from vt_jax import runtime  # pylint: disable=g-import-not-at-top
  runtime.setup(sys.argv)  # quiet console
  define_flags()
  app.run(main)
