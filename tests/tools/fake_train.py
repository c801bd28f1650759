"""A stand-in for `python -m vt_jax.main` in sweep tests: same flags, same workdir contract
(resume from the saved step, SIGTERM saves and exits, metrics.jsonl), no JAX.

Steps and speed come from the config file's args `steps`, `step_seconds`, `fail`.
"""

import json
import os
import signal
import sys
import time

from vt_jax.config_lib import files


def main(argv):
  flags = dict(a[2:].split("=", 1) for a in argv[1:] if a.startswith("--"))
  config = files.load(flags["config"])
  workdir = flags["workdir"]
  os.makedirs(workdir, exist_ok=True)
  progress = os.path.join(workdir, "progress.txt")
  start = int(open(progress).read()) if os.path.exists(progress) else 0
  with open(os.path.join(workdir, "invocations.txt"), "a") as f:
    f.write(f"start {start}\n")
  if config.fail:
    print("simulated failure: bad things happened", flush=True)
    return 3
  stop = []
  signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
  for step in range(start, config.steps):
    time.sleep(config.step_seconds)
    with open(progress, "w") as f:
      f.write(str(step + 1))
    if stop:
      print(f"SIGTERM: saved step {step + 1}", flush=True)
      return 0
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": config.steps, "split": "eval", "top1": 0.5}) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
