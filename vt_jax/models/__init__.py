"""Model registry: `create_model(config.model) -> flax.linen.Module`.

    model = create_model(config.model)
    variables = model.init({'params': key}, images, train=False)
    logits = model.apply(variables, images, train=False)   # images: NHWC float32

`model.layers` picks the form of the convolutions, BatchNorms, max-pool and grouped maps
(vt_jax.models.layers): CPU-tuned or plain flax; same parameters and outputs (the tuned
form's projector performs fewer MACs than the paper counts; vt_jax.profile counts the paper's).
`VTBlock` is one VT module for use in one's own flax model.

Classifiers (resnet, vt_resnet) return [B, num_classes]; segmentation models (fpn, vt_fpn)
return per-pixel logits [B, H, W, num_classes] at the input size.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from vt_jax.models import layers
from vt_jax.models import resnet
from vt_jax.models.fpn import FPN
from vt_jax.models.fpn import check_init as check_fpn_init
from vt_jax.models.layers import KERNEL_INITS
from vt_jax.models.resnet import ResNet
from vt_jax.models.vt import RECURRENT_LOGITS
from vt_jax.models.vt import RESIZE_MODES
from vt_jax.models.vt_block import VTBlock
from vt_jax.models.vt_resnet import VTResNet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _dtype(config) -> jnp.dtype:
  if config.dtype not in DTYPES:
    raise ValueError(f"model.dtype={config.dtype!r}; choose one of {sorted(DTYPES)}")
  return DTYPES[config.dtype]


def _layers(config) -> str:
  """model.layers (check_config checked it); 'auto' is resolved when the model is traced."""
  return config.get("layers", "auto")  # config.json of runs older than the field


def _common(config) -> dict:
  return dict(depth=config.depth, num_classes=config.num_classes, width=config.width,
              small_image_stem=config.small_image_stem, dropout=config.dropout,
              stochastic_depth_survival=config.stochastic_depth_survival,
              zero_init_residual=config.zero_init_residual,
              zero_init_head=config.zero_init_head, dtype=_dtype(config),
              layers=_layers(config))


def _check_vt(vt) -> None:
  if vt.variant not in ("iccv", "v1"):
    raise ValueError(f"model.vt.variant={vt.variant!r}; choose 'iccv' or 'v1'")
  if vt.modules is not None and vt.modules < 1:
    raise ValueError(f"model.vt.modules={vt.modules}; need at least one VT module "
                     "(None: as many as the ResNet's stage 5 has blocks)")
  if vt.resize not in RESIZE_MODES:
    raise ValueError(f"model.vt.resize={vt.resize!r}; choose one of {list(RESIZE_MODES)}")
  if vt.kernel_init not in KERNEL_INITS:
    raise ValueError(f"model.vt.kernel_init={vt.kernel_init!r}; choose one of "
                     f"{sorted(KERNEL_INITS)}")
  if vt.recurrent_logits not in RECURRENT_LOGITS:
    raise ValueError(f"model.vt.recurrent_logits={vt.recurrent_logits!r}; choose one of "
                     f"{list(RECURRENT_LOGITS)}")
  if vt.tokens < 1 or vt.token_channels < 1:
    raise ValueError(f"model.vt.tokens={vt.tokens}, model.vt.token_channels="
                     f"{vt.token_channels}: both must be positive")


def check_config(config: ml_collections.ConfigDict) -> None:
  """The `config.model` fields create_model checks, without building the model or starting
  a JAX backend (so vt_jax.main can run it before jax.distributed.initialize): one
  ValueError naming the field."""
  name = config.get("name")
  if name not in MODELS:
    raise ValueError(f"model.name={name!r}; choose one of {list(MODELS)}")
  _dtype(config)
  form = _layers(config)
  if form not in layers.FORMS:
    raise ValueError(f"model.layers={form!r}; choose one of {list(layers.FORMS)}")
  if name == "vt_resnet":
    _check_vt(config.vt)
  elif name == "vt_fpn" and config.vt.variant not in ("iccv", "v1"):
    raise ValueError(f"model.vt.variant={config.vt.variant!r}; choose 'iccv' or 'v1'")


def create_model(config: ml_collections.ConfigDict):
  """Builds the flax module that `config` (a `config.model` section) describes."""
  check_config(config)
  name = config.get("name")
  if name == "resnet":
    return ResNet(**_common(config))
  if name == "vt_resnet":
    return VTResNet(vt=ml_collections.FrozenConfigDict(config.vt), **_common(config))
  if name in ("fpn", "vt_fpn"):
    resnet.check_depth(config.depth)
    check_fpn_init(config.init_scheme)
    vt_cfg = None
    if name == "vt_fpn":
      vt_cfg = ml_collections.FrozenConfigDict(config.vt)
    return FPN(depth=config.depth, num_classes=config.num_classes, width=config.width,
               small_image_stem=config.small_image_stem, fpn_channels=config.fpn_channels,
               head_channels=config.head_channels, head_norm_groups=config.head_norm_groups,
               stochastic_depth_survival=config.stochastic_depth_survival,
               zero_init_residual=config.zero_init_residual, vt=vt_cfg, dtype=_dtype(config),
               init_scheme=config.init_scheme, layers=_layers(config))
  raise ValueError(f"model.name={name!r}; choose one of {list(MODELS)}")


MODELS = ("resnet", "vt_resnet", "fpn", "vt_fpn")
