"""Training-recipe sections of configs (the paper's Tables 2, 8 and 9-10), in EPOCHS.

    config = recipes.default()          # Table 2: SGD, 90 epochs, batch 256
    config = recipes.advanced()         # Table 8: RMSProp, 400 epochs, batch 2048, EMA, KD...
    config.model = models.vt_resnet(18)
    config.data = data.imagenet()

Every length here is in epochs; vt_jax.train converts them to steps from the
train split's size and `batch_size` (steps_per_epoch = num_train // batch_size).

The learning rate of every recipe follows one formula (vt_jax.train.optim.lr_schedule):

    scale = batch_size / lr_batch_ref
    epoch = step / steps_per_epoch
    lr = scale * (init_lr + (peak_lr - init_lr) * epoch / warmup_epochs)   if epoch < warmup_epochs
    lr = scale * peak_lr * decay_factor ** floor((epoch - warmup_epochs) / decay_every_epochs)

or, when schedule.decay_at_fractions is set, after warm-up
    lr = scale * peak_lr * decay_factor ** (number of fractions f with step >= f * total_steps)
"""

from __future__ import annotations

import ml_collections

# Top-level fields every config may have; main.py rejects any other top-level field.
TOP_LEVEL_FIELDS = (
    "model", "data", "seed", "batch_size", "eval_batch_size", "num_epochs", "num_train_steps",
    "optimizer", "schedule", "loss", "ema_decay", "distill", "log_every_steps",
    "eval_every_epochs", "checkpoint", "mesh", "on_nonfinite_loss", "recipe", "task",
    "init_from")


def _common(**overrides) -> ml_collections.ConfigDict:
  """Fields every recipe shares; see each comment for units."""
  cfg = ml_collections.ConfigDict(dict(
      recipe="",                  # name of the recipe, for the record
      task="classification",      # classification | segmentation (vt_jax.tasks): loss,
                                  # eval metrics, best-checkpoint score, eval pictures
      init_from="",               # "" = random init; else a vt_jax.convert .npz or a vt_jax
                                  # classification workdir whose backbone weights a NEW run
                                  # starts from (never applied on resume)
      seed=0,                     # root RNG key: init, dropout, data shuffling
      batch_size=256,             # GLOBAL batch (all processes, all devices)
      eval_batch_size=256,        # global eval batch; last batch padded (valid=0)
      num_epochs=90.0,            # training length in epochs (may be fractional)
      num_train_steps=-1,         # > 0 overrides num_epochs (tests, smoke runs)
      optimizer=ml_collections.ConfigDict(dict(
          name="sgd",             # sgd | rmsprop
          momentum=0.9,
          nesterov=False,
          rmsprop_decay=0.9,      # rmsprop only (TensorFlow semantics, see optim.py)
          rmsprop_eps=1e-3,       # rmsprop only; inside the sqrt
          rmsprop_initial_scale=1.0,  # rmsprop accumulator starts here (TF: 1.0)
          weight_decay=4e-5,      # L2 added to the gradient; never on biases / BN params
          grad_clip_norm=0.0,     # > 0: clip the global gradient norm to this
      )),
      schedule=ml_collections.ConfigDict(dict(
          lr_batch_ref=256,       # learning rates below are for this global batch
          init_lr=0.0,            # lr at step 0 when warming up (per lr_batch_ref)
          peak_lr=0.1,            # lr after warm-up (per lr_batch_ref)
          warmup_epochs=0.0,
          decay_every_epochs=30.0,  # staircase decay period
          decay_factor=0.1,
          # Non-empty: lr *= decay_factor at these fractions of the run's total steps
          # (detectron2's "steps"), replacing decay_every_epochs; e.g. (2/3, 8/9).
          decay_at_fractions=(),
      )),
      loss=ml_collections.ConfigDict(dict(
          label_smoothing=0.0,
      )),
      ema_decay=0.0,              # > 0: keep an EMA of params + BN stats; evaluated as ema_top1
      distill=ml_collections.ConfigDict(dict(
          teacher_config="",      # "" = off; else a config FILE[:ARG] whose model is the teacher
          teacher_checkpoint="",  # a vt_jax workdir (latest step) or its checkpoints/<step> dir
          weight=0.8,             # loss = weight * KD + (1 - weight) * CE
          temperature=1.0,
      )),
      log_every_steps=100,        # train metrics to console/TensorBoard/metrics.jsonl
      eval_every_epochs=1.0,      # also evaluated at the end of training
      checkpoint=ml_collections.ConfigDict(dict(
          every_steps=1000,       # and always at the end / on SIGTERM
          keep=3,                 # the last K ...
          keep_best=1,            # ... plus the best K by eval top1 (ema_top1 when EMA is on)
          async_save=True,
      )),
      mesh=ml_collections.ConfigDict(dict(
          data=-1,                # devices on the batch axis; -1 = all not used by `model`
          model=1,                # devices sharding params + optimizer state (FSDP-style)
          # (regex on the '/'-joined state path, strategy): 'fsdp' shards the largest dim
          # divisible by the `model` axis, 'replicate' keeps a full copy. First match wins.
          rules=[(".*", "fsdp")],
      )),
      on_nonfinite_loss="error",  # error: stop naming the step | skip: drop that update
  ))
  cfg.update(overrides)
  return cfg


def default(**overrides) -> ml_collections.ConfigDict:
  """Table 2: SGD momentum 0.9, lr 0.1 per 256 x0.1 every 30 epochs, wd 4e-5, 90 epochs."""
  return _common(recipe="default", **overrides)


def advanced(**overrides) -> ml_collections.ConfigDict:
  """Table 8: RMSProp (TF), lr 0.01 -> 0.16 over 5 epochs then x0.9875/epoch, per 2048.

  Model-side parts of the recipe (dropout 0.2, stochastic depth survival 0.9) live
  in config.model and the AutoAugment switch in config.data; `apply_advanced_model`
  and the config files set them.
  """
  cfg = _common(recipe="advanced", batch_size=2048, eval_batch_size=1024, num_epochs=400.0,
                ema_decay=0.99985)
  cfg.optimizer.name = "rmsprop"
  # The paper does not state the advanced recipe's weight decay; 1e-5 is the value of the
  # TPU EfficientNet recipe whose RMSProp/EMA/lr settings this recipe shares.
  cfg.optimizer.weight_decay = 1e-5
  cfg.schedule.update(lr_batch_ref=2048, init_lr=0.01, peak_lr=0.16, warmup_epochs=5.0,
                      decay_every_epochs=1.0, decay_factor=0.9875)
  cfg.loss.label_smoothing = 0.1
  cfg.update(overrides)
  return cfg


def apply_advanced_model(model: ml_collections.ConfigDict) -> None:
  """The advanced recipe's model fields: dropout 0.2, stochastic depth survival 0.9."""
  model.dropout = 0.2
  model.stochastic_depth_survival = 0.9


def segmentation(**overrides) -> ml_collections.ConfigDict:
  """Semantic segmentation (Tables 9-10): detectron2's semantic-FPN 1x schedule shape.

  SGD momentum 0.9, weight decay 1e-4 (detectron2's default), a linear warm-up from 0.1% of
  the lr, x0.1 at 2/3 and 8/9 of the run, per-pixel cross-entropy, best checkpoint by miou.
  BatchNorm statistics are computed over the global batch under jit: synchronised BN.
  Config files set the batch, lr and length per dataset.
  """
  cfg = _common(recipe="segmentation", task="segmentation", batch_size=32, eval_batch_size=32)
  cfg.optimizer.weight_decay = 1e-4
  cfg.schedule.update(lr_batch_ref=32, init_lr=0.04 * 0.001, peak_lr=0.04, warmup_epochs=0.0,
                      decay_factor=0.1, decay_at_fractions=(2 / 3, 8 / 9))
  cfg.update(overrides)
  return cfg


def coco_stuff_fpn(**overrides) -> ml_collections.ConfigDict:
  """COCO-stuff (Table 9's setup: batch 32, lr 0.04): detectron2's semantic-FPN 1x at batch 32.

  detectron2 1x: 90k iterations at batch 16, lr 0.02, steps at 60k and 80k (2/3, 8/9), 1000
  warm-up iterations from 0.1% of the lr. Batch 32 with lr 0.04 (linear scaling) sees the
  same images in 45k iterations: steps at 30k and 40k. The length is given in steps, as
  detectron2 gives it.
  """
  cfg = segmentation(batch_size=32, eval_batch_size=32, num_train_steps=45_000,
                     log_every_steps=100, eval_every_epochs=4.0)
  cfg.schedule.update(lr_batch_ref=32, peak_lr=0.04, init_lr=0.04 * 0.001,
                      warmup_epochs=500 * 32 / 118_287)  # 500 iterations of 118k images
  cfg.checkpoint.every_steps = 2_000
  cfg.update(overrides)
  return cfg


def lip_fpn(**overrides) -> ml_collections.ConfigDict:
  """LIP (Table 10's setup: batch 96, lr 0.01, weight decay 5e-4; length not stated).

  Chosen: 150 epochs (the LIP parsing literature's budget, e.g. CE2P / the LIP baselines)
  with the COCO-stuff schedule's shape -- 1 warm-up epoch, x0.1 at 2/3 and 8/9 of the run --
  so both datasets share one schedule family (the paper states no LIP schedule).
  """
  cfg = segmentation(batch_size=96, eval_batch_size=96, num_epochs=150.0,
                     log_every_steps=100, eval_every_epochs=10.0)
  cfg.optimizer.weight_decay = 5e-4
  cfg.schedule.update(lr_batch_ref=96, peak_lr=0.01, init_lr=0.01 * 0.001, warmup_epochs=1.0)
  cfg.checkpoint.every_steps = 2_000
  cfg.update(overrides)
  return cfg


RECIPES = {"default": default, "advanced": advanced, "segmentation": segmentation}


def add_recipe(config: ml_collections.ConfigDict, name: str) -> None:
  """Adds recipe `name`'s fields to `config` (whose model section is set) in place."""
  if name not in RECIPES:
    raise ValueError(f"recipe={name!r}; choose one of {sorted(RECIPES)}")
  config.update(RECIPES[name]())
  if name == "advanced":
    apply_advanced_model(config.model)
