"""Model sections of configs: `config.model = models.vt_resnet(18)`.

Every field is documented here once; config files override what they change.
"""

from __future__ import annotations

import ml_collections

from vt_jax.config_lib import presets


def resnet(depth: int, **overrides) -> ml_collections.ConfigDict:
  """torchvision ResNet-`depth` (18, 34, 50, 101)."""
  cfg = ml_collections.ConfigDict(dict(
      name="resnet",
      depth=depth,
      num_classes=1000,
      width=64,                 # base channels (stage2's 3x3 width); 64 is the paper's
      small_image_stem=False,   # True: 3x3 stride-1 stem, no max-pool (8-64 px images)
      dtype="float32",          # compute dtype: float32 | bfloat16 (params stay float32)
      layers="auto",            # conv/BN/max-pool/grouped-map forms (vt_jax.models.layers):
                                # tuned (CPU-tuned) | flax (plain flax) | auto (per platform);
                                # same parameters and outputs (tuned folds the
                                # projector's grouped query into its keys: fewer MACs)
      dropout=0.0,              # head dropout rate (advanced recipe: 0.2)
      stochastic_depth_survival=1.0,  # survival of the deepest block; 1.0 = off (advanced: 0.9)
      zero_init_residual=False,  # zero-init each block's last BN scale
      zero_init_head=False,     # zero-init the classifier (uniform predictions at step 0)
  ))
  cfg.update(overrides)
  return cfg


def _tokens_read_broadly_at_init(depth: int, overrides: dict) -> None:
  """Backbone init for a model whose tokenizers read ResNet-`depth`'s stage 4.

  ResNet-101's stage-4 map is the sum of 23 residual blocks: at initialisation its values are
  so large that the spatial attention of every tokenizer reading it is near one-hot (224 px:
  VT-R101's three modules 1.6-2.1 of log(196) = 5.28, the filter tokenizer included; VT-FPN
  R101's level 4: 2.43). Residual branches that start at zero (Goyal et al. 2017) leave stage
  4 at the scale of one block: 5.0-5.1. Same parameters and MACs; an init-only choice.
  """
  if depth == 101:
    overrides.setdefault("zero_init_residual", True)


def vt_resnet(depth: int, variant: str = "iccv", **overrides) -> ml_collections.ConfigDict:
  """VT-ResNet-`depth`: ResNet stages 1-4 + VT modules.

  `variant` picks the description the VT modules follow ('iccv' or 'v1') and
  the per-depth widths chosen to land on the paper's Table 8 (vt_jax.config_lib.presets
  documents each choice). `overrides` may set top-level fields and `vt=dict(...)`.
  """
  vt_overrides = overrides.pop("vt", {})
  # VT tokens leave un-normalised residual modules with a large scale (logit std
  # ~5 at init with a random head): start from uniform predictions instead.
  overrides.setdefault("zero_init_head", True)
  _tokens_read_broadly_at_init(depth, overrides)
  cfg = resnet(depth, **overrides)
  cfg.name = "vt_resnet"
  cfg.vt = vt_defaults(variant)
  cfg.vt.update(presets.vt_preset(depth, variant))
  cfg.vt.update(vt_overrides)
  return cfg


def vt_defaults(variant: str = "iccv") -> ml_collections.ConfigDict:
  """The `model.vt` fields before any per-depth preset (the VT modules' own defaults).

  What `vt_jax.models.VTBlock` uses for every field its caller leaves unset: the paper's
  equations (`variant`), L = 16 tokens, C_T = 1024, single-group maps, 16 heads.
  """
  return ml_collections.ConfigDict(dict(
      variant=variant,          # iccv: published equations; v1: first arXiv pseudo-code
      modules=None,             # VT modules in stage 5; None -> the ResNet stage-5 block count
      channels=None,            # C, feature channels; None -> stage-4 output channels
      tokens=16,                # L
      token_channels=1024,      # C_T
      tokenizer="filter",       # first module: filter | pooling | clustering
      clustering_iterations=3,  # k-means steps of the clustering tokenizer
      recurrent=True,           # later modules: recurrent tokenizer (iccv) / dynamic (v1)
      recurrent_logits="normalized",  # iccv recurrent tokenizer's logits X W_R^T:
                                # normalized (unit rows of W_R) | paper (Eq. 2 literally)
                                # | scaled (/ sqrt(C)) | layernorm (LN of the steering
                                # tokens). 'paper' leaves every module after the first
                                # attending to one pixel at initialisation (entropy ~0 of
                                # log(HW)); see vt_jax.models.vt.RecurrentTokenizer
      interaction="transformer",  # transformer | graphconv | none
      projector=True,           # False: the next module tokenizes the unchanged map
      position_encoding=False,  # v1's encoding of the downsampled spatial attention
      pe_grid=7,                # position encoding: attention resized to 2g x 2g, conv to g x g
      pe_channels=49,           # C_p
      resize="bilinear",        # pooling tokenizer + position encoding resize: bilinear (the
                                # paper's plain interpolation) | antialiased (triangle filter)
      value_groups=1,           # groups of the tokenizer's value map
      key_groups=1,             # v1 dynamic tokenizer: groups of the key map of X
      steer_groups=1,           # recurrent tokenizer: groups of W_{T->R}
      tokenizer_heads=16,       # v1 dynamic tokenizer heads
      heads=16,                 # token transformer heads
      qk_channels=None,         # transformer query/key width; None -> C_T
      qk_groups=1,              # groups of the transformer's query/key maps
      transformer_value_groups=1,  # v1 only (iccv uses the tokens as values)
      ffn_hidden=None,          # iccv feed-forward hidden width; None -> C_T
      ffn_groups=1,             # groups of the feed-forward map(s)
      projector_heads=16,
      query_groups=1,           # projector query map (C -> C) groups
      kv_groups=1,              # projector key/value maps (C_T -> C) groups
      kernel_init="torch",      # the VT maps' kernels: torch (PyTorch's nn.Linear/nn.Conv
                                # default, U(+-1/sqrt(fan_in))) | flax (LeCun normal, 3x the
                                # variance: the shipped VT-R50 diverges within 4 steps of
                                # the default SGD recipe; see vt_jax.models.layers.KERNEL_INITS)
  ))


def fpn(depth: int, num_classes: int, **overrides) -> ml_collections.ConfigDict:
  """Semantic FPN (the baseline of the paper's Sec. 4.2): ResNet-`depth` + FPN P2-P5 + Panoptic-FPN head.

  Returns per-pixel logits at the input size (vt_jax.models.fpn). Backbone fields as in
  `resnet`; the classifier-only fields (dropout, zero_init_head) do not exist here.
  """
  cfg = ml_collections.ConfigDict(dict(
      name="fpn",
      depth=depth,
      num_classes=num_classes,  # mask classes (without the ignore label)
      width=64,                 # backbone base channels; 64 is the paper's
      small_image_stem=False,   # True: 3x3 stride-1 stem, levels at strides 1/2/4/8
      dtype="float32",
      layers="auto",            # tuned | flax | auto, as in `resnet`
      stochastic_depth_survival=1.0,
      zero_init_residual=False,
      fpn_channels=256,         # FPN / VT-FPN output channels (detectron2: 256)
      head_channels=128,        # semantic head conv channels (detectron2: 128)
      head_norm_groups=32,      # GroupNorm groups of the head (detectron2: 32)
      init_scheme="msra",       # msra: He normal (fan-out) FPN convs, LeCun predictor |
                                # detectron2: c2_xavier_fill FPN convs (VT-FPN: its W_Q),
                                # c2_msra_fill predictor, as detectron2
  ))
  cfg.update(overrides)
  return cfg


def vt_fpn(depth: int, num_classes: int, **overrides) -> ml_collections.ConfigDict:
  """VT-FPN: `fpn` with VT modules in place of the FPN convolutions (Sec. 4.2).

  `overrides` may set top-level fields and `vt=dict(...)`.
  """
  vt_overrides = overrides.pop("vt", {})
  _tokens_read_broadly_at_init(depth, overrides)
  cfg = fpn(depth, num_classes, **overrides)
  cfg.name = "vt_fpn"
  cfg.vt = ml_collections.ConfigDict(dict(
      variant="iccv",           # iccv | v1: the tokenizer / transformer equations
      tokens=8,                 # L per level (the paper: 8)
      token_channels=1024,      # C_T (the paper: 1024)
      heads=16,                 # transformer heads
      ffn_hidden=None,          # transformer feed-forward width; None -> C_T
      projector_heads=16,       # per-level projector heads
      top_down=True,            # FPN's top-down path between the levels (nearest upsample +
                                # add of the coarser level's output; no MACs, no parameters);
                                # False: the first form, levels joined by the tokens only
      zero_init_value=True,     # the projectors' W_V starts at zero: VT-FPN starts as
                                # laterals + top-down path + head; False: the first form
  ))
  cfg.vt.update(vt_overrides)
  return cfg
