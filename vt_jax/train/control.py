"""What the training loop needs besides training: stop signals and progress arithmetic.

StopSignals turns SIGTERM and a first Ctrl-C into "save and stop after this step" (a second
Ctrl-C aborts); Preempted is how the loop then tells its caller; Progress computes img/s and
the ETA from steady-state step time.
"""

from __future__ import annotations

import signal
import time

import jax
from absl import logging


def fmt_time(seconds: float) -> str:
  seconds = int(max(0, seconds))
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s"


def fmt_metrics(metrics: dict) -> str:
  return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())


class Preempted(Exception):  # noqa: N818 -- an outcome, not an error
  """Training stopped on SIGTERM or a first Ctrl-C after saving a checkpoint at `step`."""

  def __init__(self, step: int, total: int, workdir: str, signal_name: str):
    super().__init__(f"{signal_name}: preempted at step {step} of {total}; checkpoint saved "
                     f"in {workdir}; resume with the same command")
    self.step, self.total, self.workdir, self.signal_name = step, total, workdir, signal_name


class StopSignals:
  """SIGTERM and the first Ctrl-C ask the loop to save and stop at the next step boundary;
  a second Ctrl-C aborts at once (KeyboardInterrupt).

  Several processes must agree on the step at which they stop, which orbax's preemption
  sync point (jax.distributed's preemption service, SIGTERM) gives: with more than one
  process Ctrl-C keeps Python's default (abort), since the others would not see it.
  """

  def __init__(self):
    self.signum = None
    self._previous = {}

  def _on_signal(self, signum, frame):  # pylint: disable=unused-argument
    if signum == signal.SIGINT and self.signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise KeyboardInterrupt("second Ctrl-C: aborted without saving")
    if self.signum is None:
      self.signum = signum
      logging.warning("%s received: saving a checkpoint after this step, then exiting%s",
                      signal.Signals(signum).name,
                      " (Ctrl-C again aborts without saving)" if signum == signal.SIGINT else "")

  def __enter__(self):
    signums = [signal.SIGTERM] + ([signal.SIGINT] if jax.process_count() == 1 else [])
    for signum in signums:
      try:
        self._previous[signum] = signal.signal(signum, self._on_signal)
      except ValueError:  # not the main thread (e.g. inside some test runners)
        pass
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def stopping(self, manager, step: int) -> bool:
    if jax.process_count() == 1:
      return self.signum is not None
    return manager.reached_preemption(step)


class Progress:
  """Progress lines: img/s and ETA from steady-state step time.

  The first step (compilation) and the time spent in eval and checkpoint saves are left out
  of the step time; the ETA adds the remaining evals at the last eval's duration.
  """

  def __init__(self, start: int, total: int, batch_size: int, eval_every: int):
    self.start, self.total, self.batch, self.eval_every = start, total, batch_size, eval_every
    self.t_start = time.time()
    self.t_steady = None      # wall time when the first (compiling) step had finished
    self.steady_step = None
    self.excluded = 0.0       # eval/save seconds since t_steady
    self.last_eval_seconds = None
    self.t_last, self.step_last, self.excluded_last = None, None, 0.0

  def first_step_done(self, step: int) -> None:
    self.t_steady, self.steady_step = time.time(), step
    self.t_last, self.step_last, self.excluded_last = self.t_steady, step, 0.0

  def exclude(self, seconds: float, eval_seconds: float | None = None) -> None:
    if self.t_steady is not None:
      self.excluded += seconds
    if eval_seconds is not None:
      self.last_eval_seconds = eval_seconds

  def rates(self, step: int) -> tuple[float | None, float | None]:
    """(images/s since the previous call, ETA seconds), None while not yet measured."""
    now = time.time()
    rate = eta = None
    if self.t_steady is not None and step > self.step_last:
      busy = now - self.t_last - (self.excluded - self.excluded_last)
      rate = (step - self.step_last) * self.batch / max(busy, 1e-9)
    if self.t_steady is not None and step > self.steady_step:
      per_step = (now - self.t_steady - self.excluded) / (step - self.steady_step)
      # evals still to run: at multiples of eval_every, and at the last step
      evals_left = self.total // self.eval_every - step // self.eval_every + (
          1 if self.total % self.eval_every and step < self.total else 0)
      eta = (self.total - step) * per_step + evals_left * (self.last_eval_seconds or 0.0)
    if self.t_steady is not None:
      self.t_last, self.step_last, self.excluded_last = now, step, self.excluded
    return rate, eta
