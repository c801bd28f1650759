"""Flips, AutoAugment and RandAugment on the accelerator, inside the jitted train step.

`config.data.augment_device=True` moves the train-time flip and the
`config.data.augment` policy of `vt_jax.data.augment` (AutoAugment's ImageNet policy,
Cubuk et al. 2019; RandAugment, Cubuk et al. 2020) from the host's tf.data pipeline into
the train step: the host sends uint8 crops plus each example's (epoch, index), and
`train_images` augments and normalises them on the device.

Every op is a per-example jnp function mapped over the batch with `jax.vmap`; its random
draws come from `jax.random.fold_in` of the run's seed with (epoch, index), so an example's
augmentation depends on nothing else (not the batch, the device or the process layout).
The device draws are not the host's (different generators); the distributions are the
same: the same sub-policies, probabilities, levels, signs and cutout positions.

Why hand-written: no dependency of vt_jax ships these policies in JAX, and the ops must
match the host ops of `vt_jax.data.augment` op by op: the same values for the table ops and
cutout (AutoContrast's fractional outputs up to float32 division's last bit), within one
grey level for the blends (float32 summation order), and the same pixels for the geometric
ops except where a source coordinate lies on a half-pixel tie that TF's and XLA's float32
arithmetic round to different neighbours (tests/data/test_augment_device.py).

Fixed work per example, no branch per op. Each op of the policies is one of four kinds,
each of which has an identity setting:
  * geometric (Rotate, ShearX/Y, TranslateX/Y): one nearest-neighbour gather through an
    affine matrix, grey fill 128 outside the image (as TF's ImageProjectiveTransformV3
    with NEAREST / CONSTANT); identity matrix otherwise;
  * per-channel lookup table of 256 entries applied by a gather (Invert, Posterize,
    Solarize, SolarizeAdd, AutoContrast, Equalize; the last two build the table from the
    image's histogram / range); identity otherwise;
  * blend with a degenerate image, `clip(d + f * (x - d))` (Color: grey image, Contrast:
    mean grey, Brightness: black, Sharpness: 3x3 smoothed image); f = 1 otherwise;
  * cutout: a square mask filled with grey; empty otherwise.
An op slot runs gather -> table -> blend -> cutout with the parameters of the op its
example drew (looked up in per-policy tables), so exactly one stage acts and the others
are identities. A sub-policy of AutoAugment is two slots, RandAugment N slots: the ops
run in the policy's order (AutoAugment pairs Color -> Equalize as well as
Solarize -> Color, so no single fixed stage order could). Stages that no op of the policy
uses are left out at trace time.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vt_jax.data import policies
from vt_jax.data.policies import KINDS

_MAX_LEVEL = 10.0
_FILL = 128.0
_KEY_STREAM = 0x41554744  # fold_in tag of the augmentation key stream ("AUGD")
_GRAY = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale's weights

GEOMETRIC = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')
TABLE_OPS = ('Invert', 'Posterize', 'Solarize', 'SolarizeAdd', 'AutoContrast',
             'Equalize')
BLENDS = ('Color', 'Contrast', 'Brightness', 'Sharpness')
# Table kinds (row 0 of every table is the identity op).
_T_NONE, _T_STATIC, _T_AUTOCONTRAST, _T_EQUALIZE = 0, 1, 2, 3
_B_NONE, _B_COLOR, _B_CONTRAST, _B_BRIGHTNESS, _B_SHARPNESS = 0, 1, 2, 3, 4


def _f32(x) -> np.float32:
  return np.float32(x)


def _affine(name: str, m: float, sign: float, h: int, w: int) -> np.ndarray:
  """The host op's matrix (output -> input coords: x_in = a0 x + a1 y + a2, y_in = ...)."""
  if name == 'Rotate':
    # float32 as the host computes it: degrees * pi / 180, about the image centre.
    a = _f32(_f32(sign * _f32(30.0 * m)) * _f32(math.pi)) / _f32(180.0)
    cos, sin = np.cos(a, dtype=np.float32), np.sin(a, dtype=np.float32)
    w1, h1 = _f32(w - 1), _f32(h - 1)
    tx = (w1 - (cos * w1 - sin * h1)) / _f32(2)
    ty = (h1 - (sin * w1 + cos * h1)) / _f32(2)
    return np.array([cos, -sin, tx, sin, cos, ty], np.float32)
  if name in ('ShearX', 'ShearY'):
    level = sign * _f32(0.3 * m)
    return np.array([1, level, 0, 0, 1, 0] if name == 'ShearX' else
                    [1, 0, 0, level, 1, 0], np.float32)
  if name in ('TranslateX', 'TranslateY'):
    pixels = sign * (_f32(0.45 * m) * _f32(h))  # a fraction of the image size, as the host
    return np.array([1, 0, -pixels, 0, 1, 0] if name == 'TranslateX' else
                    [1, 0, 0, 0, 1, -pixels], np.float32)
  return np.array([1, 0, 0, 0, 1, 0], np.float32)


def _static_table(name: str, m: float) -> np.ndarray:
  """[256] float32 output of an image-independent table op for inputs 0..255."""
  v = np.arange(256, dtype=np.float32)
  if name == 'Invert':
    return 255.0 - v
  if name == 'Posterize':
    shift = _f32(2.0 ** (8 - int(m * 4)))
    return np.floor(v / shift) * shift
  if name == 'Solarize':
    return np.where(v < _f32(256.0 * m), v, 255.0 - v)
  if name == 'SolarizeAdd':
    return np.where(v < 128.0, np.clip(v + _f32(int(110 * m)), 0., 255.), v)
  return v


class Plan:
  """Per-policy op tables for images of size h x w (row 0: the identity op).

  ops: the (name, level) of each row after row 0. Fields are numpy arrays with one row
  per op: matrix [R, 2, 6] (for sign -1 / +1), table_kind [R], table [R, 256],
  table_slope [R], blend_kind [R], factor [R], pad [R] (cutout half-size, px).
  """

  def __init__(self, ops, h: int, w: int):
    self.ops = tuple(ops)
    self.h, self.w = h, w
    rows = [('Identity', 0.0)] + list(self.ops)
    n = len(rows)
    self.matrix = np.zeros((n, 2, 6), np.float32)
    self.table_kind = np.zeros(n, np.int32)
    self.table = np.tile(np.arange(256, dtype=np.float32), (n, 1))
    # Tables are exact on integer inputs. A blend before the op (RandAugment, or Color ->
    # Equalize in AutoAugment) leaves fractions: Invert stays exact with slope -1 (255 - x),
    # Posterize and Equalize (which truncates on the host too) are exact on the integer
    # part, Solarize / SolarizeAdd read the integer part: within one grey level, except a
    # value in [threshold, ceil(threshold)) for Solarize's fractional thresholds, which the
    # host inverts and the table keeps.
    self.table_slope = np.zeros(n, np.float32)
    self.blend_kind = np.zeros(n, np.int32)
    self.factor = np.ones(n, np.float32)
    self.pad = np.zeros(n, np.int32)
    for r, (name, level) in enumerate(rows):
      m = float(level) / _MAX_LEVEL
      for s, sign in enumerate((-1.0, 1.0)):
        self.matrix[r, s] = _affine(name, m, sign, h, w)
      if name in ('Invert', 'Posterize', 'Solarize', 'SolarizeAdd'):
        self.table_kind[r] = _T_STATIC
        self.table[r] = _static_table(name, m)
        self.table_slope[r] = -1.0 if name == 'Invert' else 0.0
      elif name == 'AutoContrast':
        self.table_kind[r] = _T_AUTOCONTRAST
      elif name == 'Equalize':
        self.table_kind[r] = _T_EQUALIZE
      elif name in BLENDS:
        self.blend_kind[r] = BLENDS.index(name) + 1
        self.factor[r] = _f32(1.8 * m + 0.1)
      elif name == 'Cutout':
        self.pad[r] = int(_f32(0.18 * m) * _f32(h))
      elif name not in GEOMETRIC and name != 'Identity':
        raise ValueError(f'unknown augmentation op {name!r}')
    names = {name for name, _ in self.ops}
    self.geometric = bool(names & set(GEOMETRIC))
    self.tables = bool(names & set(TABLE_OPS))
    self.equalize = 'Equalize' in names
    self.autocontrast = 'AutoContrast' in names
    self.blends = {name for name in names if name in BLENDS}
    self.cutout = 'Cutout' in names


# --- the four stages of an op slot (one example, float32 [H, W, 3] in 0..255) -------------


def _round_half_away(v):
  """std::round, as TF's nearest interpolation (jnp.round rounds half to even)."""
  return jnp.sign(v) * jnp.floor(jnp.abs(v) + 0.5)


def _warp(x, a):
  """Nearest-neighbour affine resampling; a = [a0, a1, a2, b0, b1, b2] maps output
  (x, y) to input (a0 x + a1 y + a2, b0 x + b1 y + b2); grey outside the image."""
  h, w, _ = x.shape
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing='ij')
  ix = _round_half_away(a[0] * xs + a[1] * ys + a[2]).astype(jnp.int32)
  iy = _round_half_away(a[3] * xs + a[4] * ys + a[5]).astype(jnp.int32)
  inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
  flat = jnp.clip(iy, 0, h - 1) * w + jnp.clip(ix, 0, w - 1)
  moved = x.reshape(h * w, 3)[flat]
  return jnp.where(inside[..., None], moved, _FILL)


def _equalize_tables(idx):
  """PIL's ImageOps.equalize as vt_jax.data.augment._equalize_channel: [3, 256] tables and [3]
  flags (False: the channel stays as it is)."""
  h, w, _ = idx.shape
  channel = jnp.broadcast_to(jnp.arange(3), idx.shape)
  hist = jnp.zeros((3, 256), jnp.int32).at[channel, idx].add(1)
  last = 255 - jnp.argmax(hist[:, ::-1] > 0, axis=1)
  last_count = jnp.take_along_axis(hist, last[:, None], axis=1)[:, 0]
  step = (h * w - last_count) // 255
  cum = jnp.cumsum(hist, axis=1)
  lut = (cum[:, :-1] + (step // 2)[:, None]) // jnp.maximum(step, 1)[:, None]
  lut = jnp.clip(jnp.concatenate([jnp.zeros((3, 1), jnp.int32), lut], axis=1), 0, 255)
  return lut.astype(jnp.float32), step > 0


def _table_stage(x, p, plan: Plan):
  """Per-channel 256-entry lookup, gathered at the integer part of each value."""
  idx = jnp.clip(jnp.floor(x), 0, 255).astype(jnp.int32)
  kind = p['table_kind']
  table = jnp.broadcast_to(p['table'], (3, 256))
  slope = jnp.broadcast_to(p['table_slope'], (3,))
  active = jnp.broadcast_to(kind != _T_NONE, (3,))
  if plan.autocontrast:
    lo, hi = x.min(axis=(0, 1)), x.max(axis=(0, 1))
    denom = jnp.maximum(hi - lo, 1.0)
    v = jnp.arange(256, dtype=jnp.float32)
    ac = kind == _T_AUTOCONTRAST
    # The host's (x - lo) * 255 / (hi - lo); for fractional inputs (after a blend) the
    # table value at the integer part plus the slope times the fraction.
    table = jnp.where(ac, (v[None] - lo[:, None]) * 255.0 / denom[:, None], table)
    slope = jnp.where(ac, 255.0 / denom, slope)
    active = active & ~(ac & (hi <= lo))
  if plan.equalize:
    eq_table, changes = _equalize_tables(idx)
    eq = kind == _T_EQUALIZE
    table = jnp.where(eq, eq_table, table)
    active = active & ~(eq & ~changes)
  looked_up = jnp.take_along_axis(table.T, idx.reshape(-1, 3), axis=0).reshape(x.shape)
  # The clip only catches float32 division's last-ulp overshoot of AutoContrast's 255.
  looked_up = jnp.clip(looked_up + slope * (x - idx.astype(jnp.float32)), 0.0, 255.0)
  return jnp.where(active, looked_up, x)


def _gray(x):
  return x[..., 0:1] * _GRAY[0] + x[..., 1:2] * _GRAY[1] + x[..., 2:3] * _GRAY[2]


def _smoothed(x):
  """The host's sharpness degenerate: PIL's SMOOTH kernel over the interior, rounded;
  the 1-pixel border keeps the image."""
  h, w, _ = x.shape
  k = np.array([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]], np.float32) / np.float32(13.0)
  inner = sum(x[i:h - 2 + i, j:w - 2 + j] * k[i, j] for i in range(3) for j in range(3))
  return x.at[1:-1, 1:-1].set(jnp.round(inner))


def _blend_stage(x, p, plan: Plan):
  kind = p['blend_kind']
  degenerate = jnp.zeros_like(x)  # Brightness
  if plan.blends & {'Color', 'Contrast'}:
    gray = _gray(x)
    if 'Color' in plan.blends:
      degenerate = jnp.where(kind == _B_COLOR, gray, degenerate)
    if 'Contrast' in plan.blends:
      degenerate = jnp.where(kind == _B_CONTRAST, jnp.mean(gray), degenerate)
  if 'Sharpness' in plan.blends:
    degenerate = jnp.where(kind == _B_SHARPNESS, _smoothed(x), degenerate)
  blended = jnp.clip(degenerate + p['factor'] * (x - degenerate), 0.0, 255.0)
  return jnp.where(kind != _B_NONE, blended, x)


def _cutout_stage(x, p):
  h, w, _ = x.shape
  ys = jnp.arange(h)[:, None, None]
  xs = jnp.arange(w)[None, :, None]
  inside = (jnp.abs(ys - p['cy']) < p['pad']) & (jnp.abs(xs - p['cx']) < p['pad'])
  return jnp.where(inside, _FILL, x)


def _slot(x, p, plan: Plan):
  """One op of the policy: gather -> table -> blend -> cutout; only one stage acts."""
  if plan.geometric:
    x = _warp(x, p['matrix'])
  if plan.tables:
    x = _table_stage(x, p, plan)
  if plan.blends:
    x = _blend_stage(x, p, plan)
  if plan.cutout:
    x = _cutout_stage(x, p)
  return x


def _slot_params(plan: Plan, row, sign_positive, cy, cx) -> dict:
  """The parameters of table row `row` (0: identity) for one example."""
  return dict(matrix=jnp.asarray(plan.matrix)[row, sign_positive.astype(jnp.int32)],
              table_kind=jnp.asarray(plan.table_kind)[row],
              table=jnp.asarray(plan.table)[row],
              table_slope=jnp.asarray(plan.table_slope)[row],
              blend_kind=jnp.asarray(plan.blend_kind)[row],
              factor=jnp.asarray(plan.factor)[row],
              pad=jnp.asarray(plan.pad)[row], cy=cy, cx=cx)


def apply_op(image, name: str, level: float, *, sign: float = 1.0, cy: int = 0,
             cx: int = 0):
  """One op of `vt_jax.data.augment` by the device path, with its random parts given:
  `sign` of the geometric magnitude and the cutout centre (cy, cx). image: [H, W, 3]
  values 0..255 -> float32. For tests and inspection; the train step uses augment_batch."""
  x = jnp.asarray(image, jnp.float32)
  plan = Plan([(name, level)], x.shape[0], x.shape[1])
  params = _slot_params(plan, 1, jnp.asarray(sign > 0), jnp.asarray(cy), jnp.asarray(cx))
  return _slot(x, params, plan)


# --- policies --------------------------------------------------------------------------


def example_key(seed, epoch, index):
  """The example's key: fold_in of the run's seed with (epoch, index) and nothing else."""
  key = jax.random.fold_in(jax.random.PRNGKey(seed), _KEY_STREAM)
  return jax.random.fold_in(jax.random.fold_in(key, epoch), index)


def policy_draws(kind: str, plan: Plan, key, num_layers: int):
  """-> (rows [S], signs [S], cy [S], cx [S], choice) for the S op slots of one example;
  choice is the AutoAugment sub-policy (RandAugment: the first layer's op)."""
  k_choice, k_fire, k_sign, k_cy, k_cx = jax.random.split(key, 5)
  if kind == 'autoaugment':
    slots = 2
    choice = jax.random.randint(k_choice, (), 0, len(policies.IMAGENET_POLICY))
    probs = jnp.asarray([prob for sub in policies.IMAGENET_POLICY
                         for _, prob, _ in sub], jnp.float32)
    candidate = 1 + 2 * choice + jnp.arange(slots)  # table rows of the sub-policy
    fire = jax.random.uniform(k_fire, (slots,)) < probs[candidate - 1]
    rows = jnp.where(fire, candidate, 0)
  else:  # randaugment: every layer applies one uniformly drawn op
    slots = num_layers
    rows = 1 + jax.random.randint(k_choice, (slots,), 0, len(policies.RANDAUGMENT_OPS))
    choice = rows[0] - 1
  signs = jax.random.bernoulli(k_sign, 0.5, (slots,))
  cy = jax.random.randint(k_cy, (slots,), 0, plan.h)
  cx = jax.random.randint(k_cx, (slots,), 0, plan.w)
  return rows, signs, cy, cx, choice


def make_plan(kind: str, h: int, w: int, randaugment_magnitude: float = 9.0) -> Plan:
  if kind == 'autoaugment':
    return Plan([(name, level) for sub in policies.IMAGENET_POLICY
                 for name, _, level in sub], h, w)
  if kind == 'randaugment':
    return Plan([(name, randaugment_magnitude) for name in policies.RANDAUGMENT_OPS],
                h, w)
  raise ValueError(f'config.data.augment={kind!r}: expected one of {list(KINDS)}')


def augment_one(image, key, *, kind: str, flip: bool, randaugment_layers: int = 2,
                randaugment_magnitude: float = 9.0):
  """One example: uint8 (or 0..255) [H, W, 3] -> float32 [H, W, 3] in 0..255.

  Random horizontal flip (probability 1/2) when `flip`, then the policy `kind`.
  """
  if kind not in KINDS:
    raise ValueError(f'config.data.augment={kind!r}: expected one of {list(KINDS)}')
  x = jnp.asarray(image).astype(jnp.float32)
  k_flip, k_policy = jax.random.split(key)
  if flip:
    x = jnp.where(jax.random.bernoulli(k_flip), x[:, ::-1], x)
  if kind == 'none':
    return x
  plan = make_plan(kind, x.shape[0], x.shape[1], randaugment_magnitude)
  rows, signs, cy, cx, _ = policy_draws(kind, plan, k_policy, randaugment_layers)
  for s in range(rows.shape[0]):
    x = _slot(x, _slot_params(plan, rows[s], signs[s], cy[s], cx[s]), plan)
  return x


def augment_batch(images, epoch, index, seed, *, kind: str, flip: bool,
                  randaugment_layers: int = 2, randaugment_magnitude: float = 9.0):
  """images uint8 [B, H, W, 3], epoch / index int [B], seed int -> float32 [B, H, W, 3]
  in 0..255; row i depends only on (images[i], seed, epoch[i], index[i])."""

  def one(image, e, i):
    return augment_one(image, example_key(seed, e, i), kind=kind, flip=flip,
                       randaugment_layers=randaugment_layers,
                       randaugment_magnitude=randaugment_magnitude)

  return jax.vmap(one)(images, epoch, index)


def sub_policy_choice(kind: str, key, *, h: int = 8, w: int = 8, randaugment_layers: int = 2):
  """The sub-policy (AutoAugment) or first op (RandAugment) an example key draws."""
  plan = make_plan(kind, h, w)
  return policy_draws(kind, plan, jax.random.split(key)[1], randaugment_layers)[4]


# --- the train / eval step's view of config.data --------------------------------------------


def enabled(data_config) -> bool:
  """config.data.augment_device (absent: False, the host augments)."""
  return bool(data_config.get('augment_device', False))


def flips(data_config) -> bool:
  """The host's rule: ImageNet-style train crops are mirrored, 'resize' data (digits)
  only when the config says so."""
  preprocess = data_config.get('preprocess', 'imagenet')
  return bool(data_config.get('flip', preprocess == 'imagenet'))


def normalise(images, data_config):
  """(x - mean) / std per channel, float32, as the host pipeline normalises."""
  mean = jnp.asarray(data_config.mean, jnp.float32)
  std = jnp.asarray(data_config.std, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


def _zero_invalid_rows(images, batch):
  """Rows with valid=0 (bad examples, eval padding) become 0 after normalisation, as the
  host pipeline sends them, so they add the same zeros to BatchNorm's batch statistics."""
  if 'valid' not in batch:
    return images
  return jnp.where((batch['valid'] > 0)[:, None, None, None], images, 0.0)


def train_images(batch, config):
  """The model's input for a train batch of uint8 crops: augmented, normalised."""
  data = config.data
  if data.get('task', 'classification') != 'classification':
    raise ValueError(f"config.data.augment_device=True with config.data.task="
                     f"{data.task!r}: segmentation augments on the host; set "
                     "config.data.augment_device=False")
  missing = [k for k in ('image', 'epoch', 'index') if k not in batch]
  if missing:
    raise ValueError(f'config.data.augment_device=True but the train batch lacks '
                     f'{missing}: the input pipeline must emit uint8 images with each '
                     "example's epoch and index (set config.data.augment_device=False "
                     'to augment on the host)')
  if batch['image'].dtype != jnp.uint8:
    raise ValueError(f"config.data.augment_device=True but the train batch's images are "
                     f"{batch['image'].dtype}, not uint8 crops: the input pipeline must send "
                     'them unnormalised (or set config.data.augment_device=False)')
  images = augment_batch(
      batch['image'], batch['epoch'], batch['index'], int(config.seed),
      kind=data.augment, flip=flips(data),
      randaugment_layers=int(data.get('randaugment_layers', 2)),
      randaugment_magnitude=float(data.get('randaugment_magnitude', 9.0)))
  return _zero_invalid_rows(normalise(images, data), batch)


def eval_images(batch, data_config):
  """The model's input for an eval batch: uint8 images normalised, float ones (normalised
  by the host pipeline) as they are."""
  images = batch['image']
  if images.dtype != jnp.uint8:
    return images
  if data_config is None:
    raise ValueError('a uint8 eval batch (config.data.augment_device=True) reached an eval '
                     'step built without data_config: pass data_config=config.data to '
                     'make_eval_step / make_predict_step')
  return _zero_invalid_rows(normalise(images, data_config), batch)
