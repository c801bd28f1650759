"""The training loop and the evaluation entry: what `python -m vt_jax.main` runs."""

from __future__ import annotations

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
from vt_jax.train import control
from vt_jax.train import optim
from vt_jax.train import run_config
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
    self.init_fn, self.shardings, shapes = state_lib.sharded_init(
        self.model, self.tx, self.info.image_shape, self.mesh, config.mesh.rules)
    self.rng = jax.random.PRNGKey(config.seed)
    self.abstract_state = ckpt_lib.abstract_like(shapes, self.shardings)
    self.manager = ckpt_lib.make_manager(workdir, config, read_only=read_only)
    self.eval_step = steps_lib.make_eval_step(self.model, self.mesh, self.shardings,
                                              use_ema=config.ema_decay > 0, task=self.task,
                                              data_config=config.data)
    self.num_pictures = min(self.task.num_pictures, config.eval_batch_size)
    if self.num_pictures:
      self.predict_step = steps_lib.make_predict_step(self.model, self.mesh, self.shardings,
                                                      self.task, self.num_pictures,
                                                      data_config=config.data)
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, datasets=None,
                       devices=None) -> dict:
  """Trains (resuming from workdir's latest readable checkpoint) and evaluates.

  datasets: a module-like object with get_info / make_iterator (default vt_jax.data).
  Returns the final evaluation's metrics. Raises run_config.ConfigMismatchError before
  writing anything when workdir holds a run with an incompatible config, and control.Preempted
  after saving when SIGTERM or a first Ctrl-C stopped the run.
  """
  run_config.check_against_saved(config, workdir)
  s = _Setup(config, workdir, datasets, devices)
  fingerprint = getattr(s.data, "fingerprint", None)
  data_record = fingerprint(config.data, config.batch_size, config.seed) if fingerprint else None
  if data_record is not None:  # a changed input stream is refused before any work
    ckpt_lib.check_data_record(s.manager, data_record, workdir)
  if jax.process_index() == 0:
    run_config.write(config, workdir)
  state, start = ckpt_lib.restore_latest(s.manager, s.abstract_state, move_aside=True)
  if state is None:
    state, start = s.init_fn(s.rng), 0
    logging.info("initialised a new run in %s", workdir)
    if config.get("init_from"):  # a new run only: a resumed one has its own weights
      from vt_jax.train import pretrained  # pylint: disable=g-import-not-at-top
      state = pretrained.apply_init_from(state, config.init_from, s.shardings)
  else:
    logging.info("resumed from the checkpoint at step %d in %s (example %d of the data "
                 "order)", start, workdir, start * config.batch_size)
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

  it = s.data.make_iterator(config.data, split="train", global_batch_size=config.batch_size,
                            mesh=s.mesh, seed=config.seed, start_step=start)
  pending = []  # (step, metrics on device) not yet fetched: fetching every step would sync
  progress = control.Progress(start, total, config.batch_size, eval_every)
  skipped = {"seen": 0, "total": 0}  # bad examples skipped by the data pipeline
  eval_metrics = None
  step = start
  stopped_by = None

  def flush():
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
    rate, eta = progress.rates(last_step)
    now_skipped = int(getattr(it, "num_skipped", 0))
    new_skipped, skipped["seen"] = now_skipped - skipped["seen"], now_skipped
    skipped["total"] += new_skipped
    mean.update(lr=float(fetched[-1]["lr"]), epoch=last_step / s.spe,
                skipped_updates=float(sum(m["nonfinite"] > 0 for m in fetched)),
                skipped_examples=float(new_skipped))
    if rate is not None:
      mean["images_per_sec"] = rate
    writers["train"].write_scalars(last_step, mean)
    logging.info("step %d/%d  epoch %.2f  loss %.4f  %s %.3f  lr %.4g  %s img/s  "
                 "elapsed %s  ETA %s%s", last_step, total, last_step / s.spe, mean["loss"],
                 metric, mean[metric], mean["lr"], "--" if rate is None else f"{rate:.0f}",
                 control.fmt_time(time.time() - progress.t_start),
                 "--" if eta is None else control.fmt_time(eta),
                 f"  skipped {skipped['total']} bad examples" if skipped["total"] else "")
    pending.clear()

  with control.StopSignals() as signals:
    for step in range(start, total):
      batch = next(it)
      state, metrics = train_step(state, batch)
      pending.append((step + 1, metrics))
      done = step + 1
      if step == start:  # compilation: kept out of img/s and the ETA
        jax.block_until_ready(metrics)
        progress.first_step_done(done)
      last = done == total
      do_eval = done % eval_every == 0 or last
      stopping = signals.stopping(s.manager, done)
      do_save = do_eval or done % ckpt_every == 0 or last or stopping
      if done % log_every == 0 or last or do_save:
        flush()
      score = None
      t0 = time.time()
      eval_seconds = None
      if do_eval:
        eval_metrics = s.evaluate(state)
        eval_seconds = time.time() - t0
        writers["eval"].write_scalars(done, dict(eval_metrics, epoch=done / s.spe))
        logging.info("eval at step %d: %s", done, control.fmt_metrics(eval_metrics))
        score = s.score(eval_metrics)
      if do_save:
        ckpt_lib.save(s.manager, state, score, data=data_record)
      progress.exclude(time.time() - t0, eval_seconds)
      if stopping:
        stopped_by = signal.Signals(signals.signum).name if signals.signum else (
            "SIGTERM (of another process)")
        break
    step = int(jax.device_get(state.step))
    if start >= total:  # the workdir holds a finished run: report its evaluation
      logging.info("the checkpoint at step %d already reaches the %d training steps; "
                   "evaluating it", start, total)
      eval_metrics = s.evaluate(state)
    ckpt_lib.wait_until_finished(s.manager)
  close = getattr(it, "close", None)
  if close is not None:  # stop the batches prepared ahead (nothing is left running)
    close()
  for w in writers.values():
    w.flush()
  elapsed = time.time() - progress.t_start
  s.manager.close()
  summary = dict(step=step, total_steps=total, minutes=elapsed / 60,
                 skipped_examples=skipped["total"], **(eval_metrics or {}))
  if stopped_by is not None:
    preempted = control.Preempted(step, total, workdir, stopped_by)
    logging.warning("summary: %s (%s)", preempted, control.fmt_time(elapsed))
    print("PREEMPTED " + json.dumps(summary), flush=True)
    raise preempted
  if eval_metrics is not None:
    logging.info("summary: %d steps in %s; eval %s", step, control.fmt_time(elapsed),
                 control.fmt_metrics(eval_metrics))
    print("FINAL " + json.dumps(summary), flush=True)
  return eval_metrics or {}


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, *, step=None,
                        datasets=None, devices=None) -> dict:
  """--mode=eval: evaluates the latest (or `step`) checkpoint; writes eval_step_<N>.json.

  The result is printed before it is written; a workdir that cannot be written (read-only,
  full) only costs the file, with a warning.
  """
  run_config.check_against_saved(config, workdir)
  s = _Setup(config, workdir, datasets, devices, read_only=True)
  state, restored_step = ckpt_lib.restore_latest(s.manager, s.abstract_state, step)
  if state is None:
    raise ckpt_lib.CheckpointError(f"no checkpoint in {ckpt_lib.checkpoint_dir(workdir)} to "
                                   "evaluate; train first (--mode=train)")
  result = s.evaluate(state)
  result["step"] = restored_step
  logging.info("eval of step %d: %s", restored_step,
               control.fmt_metrics({k: v for k, v in result.items() if k != "step"}))
  print("EVAL " + json.dumps(result), flush=True)
  if jax.process_index() == 0:
    path = os.path.join(workdir, f"eval_step_{restored_step}.json")
    try:
      with tf.io.gfile.GFile(path, "w") as f:
        json.dump(result, f, indent=2)
    except (OSError, tf.errors.OpError) as e:
      logging.warning("could not write %s (%s: %s); the result is the EVAL line above",
                      path, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
  s.manager.close()
  return result
