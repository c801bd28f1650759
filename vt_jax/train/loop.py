"""The training loop and the evaluation entry: what `python -m vt_jax.main` runs."""

from __future__ import annotations

import functools
import json
import os
import signal
import time

import jax
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from vt_jax.train import checkpoint as ckpt_lib
from vt_jax.train import optim
from vt_jax.train import sharding as sharding_lib
from vt_jax.train import state as state_lib
from vt_jax.train import steps as steps_lib
from vt_jax.train import writers as writers_lib


class NonFiniteLossError(FloatingPointError):
  pass


def _data_module(datasets):
  if datasets is not None:
    return datasets
  from vt_jax import data  # pylint: disable=g-import-not-at-top
  return data


class _Setup:
  """Everything train and eval share: info, mesh, model, optimizer, shardings, manager."""

  def __init__(self, config, workdir, datasets, devices, read_only=False):
    from vt_jax import models  # pylint: disable=g-import-not-at-top
    from vt_jax import tasks  # pylint: disable=g-import-not-at-top
    self.task = tasks.get(config)
    self.data = _data_module(datasets)
    self.info = self.data.get_info(config.data)
    if config.model.num_classes != self.info.num_classes:
      raise ValueError(f"config.model.num_classes={config.model.num_classes} but dataset "
                       f"{self.info.name!r} has {self.info.num_classes} classes")
    self.mesh = sharding_lib.make_mesh(config.mesh, devices)
    self.spe = optim.steps_per_epoch(config, self.info.num_examples["train"])
    self.total_steps = optim.total_steps(config, self.info.num_examples["train"])
    self.model = models.create_model(config.model)
    self.tx = optim.make_optimizer(config, self.spe)
    self.init_fn = functools.partial(state_lib.create, self.model, self.tx,
                                     image_shape=tuple(self.info.image_shape))
    self.rng = jax.random.PRNGKey(config.seed)
    shapes = jax.eval_shape(self.init_fn, self.rng)
    self.shardings = sharding_lib.state_shardings(shapes, self.mesh, config.mesh.rules)
    self.abstract_state = ckpt_lib.abstract_like(shapes, self.shardings)
    self.manager = ckpt_lib.make_manager(workdir, config, read_only=read_only)
    self.eval_step = steps_lib.make_eval_step(self.model, self.mesh, self.shardings,
                                              use_ema=config.ema_decay > 0, task=self.task)
    self.num_pictures = min(self.task.num_pictures, config.eval_batch_size)
    if self.num_pictures:
      self.predict_step = steps_lib.make_predict_step(self.model, self.mesh, self.shardings,
                                                      self.task, self.num_pictures)
    self.workdir = workdir
    self.config = config

  def evaluate(self, state) -> dict:
    """The task's metrics over the eval split; writes the task's pictures (process 0)."""
    it = self.data.make_iterator(self.config.data, split="eval",
                                 global_batch_size=self.config.eval_batch_size,
                                 mesh=self.mesh, seed=self.config.seed)
    sums = None
    for i, batch in enumerate(it):
      sums = self.task.accumulate(sums, self.eval_step(state, batch))
      if i == 0 and self.num_pictures:  # the same first examples at every eval
        rows, predictions = jax.device_get(self.predict_step(state, batch))
        if jax.process_index() == 0:
          step = int(jax.device_get(state.step))
          path = os.path.join(self.workdir, "pictures", f"eval_{step}.png")
          self.task.write_pictures(path, rows, predictions)
          logging.info("wrote %s", path)
    if sums is None:
      raise ValueError(f"eval split of {self.info.name!r} yielded no batches")
    return self.task.finish(sums)

  def score(self, eval_metrics) -> float:
    return self.task.score(eval_metrics)


def _write_config(config, workdir):
  if jax.process_index() == 0:
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def _fmt_time(seconds: float) -> str:
  seconds = int(max(0, seconds))
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, datasets=None,
                       devices=None) -> dict:
  """Trains (resuming from workdir's latest readable checkpoint) and evaluates.

  datasets: a module-like object with get_info / make_iterator (default vt_jax.data).
  Returns the final evaluation's metrics.
  """
  s = _Setup(config, workdir, datasets, devices)
  _write_config(config, workdir)
  state, start = ckpt_lib.restore_latest(s.manager, s.abstract_state)
  if state is None:
    state, start = jax.jit(s.init_fn, out_shardings=s.shardings)(s.rng), 0
    logging.info("initialised a new run in %s", workdir)
    if config.get("init_from"):  # a new run only: a resumed one has its own weights
      from vt_jax.train import pretrained  # pylint: disable=g-import-not-at-top
      state = pretrained.apply_init_from(state, config.init_from, s.shardings)
  else:
    logging.info("resumed from the checkpoint at step %d in %s", start, workdir)
  teacher = None
  if config.distill.teacher_config:
    from vt_jax.train import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
    teacher = teacher_lib.load_teacher(config.distill, s.mesh)
  train_step = steps_lib.make_train_step(s.model, s.tx, config, s.spe, s.mesh, s.shardings,
                                         teacher=teacher, task=s.task)
  writers = writers_lib.make_writers(workdir)
  total = s.total_steps
  eval_every = max(1, int(round(config.eval_every_epochs * s.spe)))
  log_every = max(1, int(config.log_every_steps))
  ckpt_every = max(1, int(config.checkpoint.every_steps))
  logging.info("training %d steps (%.2f epochs of %d steps, global batch %d) on %d devices, "
               "mesh %s", total, total / s.spe, s.spe, config.batch_size, len(s.mesh.devices.flat),
               dict(s.mesh.shape))

  stop = {"signal": None}
  previous_handler = signal.getsignal(signal.SIGTERM)

  def on_sigterm(signum, frame):  # pylint: disable=unused-argument
    stop["signal"] = signum  # checked between steps: save and exit cleanly

  try:
    signal.signal(signal.SIGTERM, on_sigterm)
  except ValueError:  # not the main thread (e.g. inside some test runners)
    previous_handler = None

  it = s.data.make_iterator(config.data, split="train", global_batch_size=config.batch_size,
                            mesh=s.mesh, seed=config.seed, start_step=start)
  pending = []  # (step, metrics on device) not yet fetched: fetching every step would sync
  t_start = time.time()
  t_last, step_last = t_start, start
  eval_metrics = None
  step = start

  def flush():
    nonlocal t_last, step_last
    if not pending:
      return
    fetched = jax.device_get([m for _, m in pending])
    for (st, _), m in zip(pending, fetched):
      if m["nonfinite"] > 0:
        if config.on_nonfinite_loss == "skip":
          logging.warning("step %d: non-finite loss %s; the update was skipped "
                          "(config.on_nonfinite_loss='skip')", st, m["loss"])
        else:
          raise NonFiniteLossError(
              f"step {st}: non-finite loss {m['loss']} (grad norm {m['grad_norm']}); "
              "lower the learning rate or enable gradient clipping (config.optimizer."
              "grad_clip_norm), or set config.on_nonfinite_loss='skip'")
    finite = [m for m in fetched if m["nonfinite"] == 0] or fetched
    metric = s.task.train_metric
    mean = {k: float(np.mean([m[k] for m in finite])) for k in ("loss", metric, "grad_norm")}
    last_step = pending[-1][0]
    now = time.time()
    rate = (last_step - step_last) * config.batch_size / max(now - t_last, 1e-9)
    mean.update(lr=float(fetched[-1]["lr"]), images_per_sec=rate,
                epoch=last_step / s.spe, skipped=float(sum(m["nonfinite"] > 0 for m in fetched)))
    writers["train"].write_scalars(last_step, mean)
    eta = (total - last_step) * config.batch_size / max(rate, 1e-9)
    logging.info("step %d/%d  epoch %.2f  loss %.4f  %s %.3f  lr %.4g  %.0f img/s  "
                 "elapsed %s  ETA %s", last_step, total, last_step / s.spe, mean["loss"],
                 metric, mean[metric], mean["lr"], rate, _fmt_time(now - t_start),
                 _fmt_time(eta))
    pending.clear()
    t_last, step_last = now, last_step

  try:
    for step in range(start, total):
      batch = next(it)
      state, metrics = train_step(state, batch)
      pending.append((step + 1, metrics))
      done = step + 1
      last = done == total
      do_eval = done % eval_every == 0 or last
      # Several processes must agree on the step at which they stop: orbax's preemption
      # sync point (jax.distributed's preemption service) gives that; alone, the flag does.
      stopping = (stop["signal"] is not None if jax.process_count() == 1
                  else s.manager.reached_preemption(done))
      do_save = do_eval or done % ckpt_every == 0 or last or stopping
      if done % log_every == 0 or last or do_save:
        flush()
      score = None
      if do_eval:
        eval_metrics = s.evaluate(state)
        writers["eval"].write_scalars(done, dict(eval_metrics, epoch=done / s.spe))
        score = s.score(eval_metrics)
      if do_save:
        ckpt_lib.save(s.manager, state, score)
      if stopping:
        logging.warning("SIGTERM received: saved the checkpoint at step %d in %s; exiting. "
                        "Run the same command again to resume.", done, workdir)
        break
    step = int(jax.device_get(state.step))
    if start >= total:  # the workdir holds a finished run: report its evaluation
      logging.info("the checkpoint at step %d already reaches the %d training steps; "
                   "evaluating it", start, total)
      eval_metrics = s.evaluate(state)
    s.manager.wait_until_finished()
  finally:
    if previous_handler is not None:
      signal.signal(signal.SIGTERM, previous_handler)
  for w in writers.values():
    w.flush()
  elapsed = time.time() - t_start
  summary = dict(step=step, total_steps=total, minutes=elapsed / 60, **(eval_metrics or {}))
  if eval_metrics is not None:
    logging.info("summary: %d steps in %s; eval %s", step, _fmt_time(elapsed),
                 "  ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
    print("FINAL " + json.dumps(summary), flush=True)
  s.manager.close()
  return eval_metrics or {}


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, *, step=None,
                        datasets=None, devices=None) -> dict:
  """--mode=eval: evaluates the latest (or `step`) checkpoint; writes eval_step_<N>.json."""
  s = _Setup(config, workdir, datasets, devices, read_only=True)
  state, restored_step = ckpt_lib.restore_latest(s.manager, s.abstract_state, step)
  if state is None:
    raise ckpt_lib.CheckpointError(f"no checkpoint in {ckpt_lib.checkpoint_dir(workdir)} to "
                                   "evaluate; train first (--mode=train)")
  result = s.evaluate(state)
  result["step"] = restored_step
  if jax.process_index() == 0:
    with tf.io.gfile.GFile(os.path.join(workdir, f"eval_step_{restored_step}.json"), "w") as f:
      json.dump(result, f, indent=2)
  logging.info("eval of step %d: %s", restored_step, result)
  print("EVAL " + json.dumps(result), flush=True)
  s.manager.close()
  return result
