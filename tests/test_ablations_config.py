"""configs/ablations.py: every arg builds a model that profiles, and changes what it says."""

import pytest

from vt_jax import models
from vt_jax import profile
from vt_jax.config_lib import files

SMALL = [
    "", "tokenizer=pooling", "tokenizer=clustering", "tokenizer=pooling,resize=antialiased",
    "recurrent=false", "interaction=graphconv", "interaction=none", "tokens=32",
    "projector=false", "position_encoding=true", "variant=v1", "depth=34", "depth=50",
    "model=resnet", "width=4,epochs=2,canvas=32,clutter=true,seed=3", "recipe=advanced",
]


@pytest.mark.parametrize("arg", SMALL)
def test_every_digit_scenes_arg_builds_and_profiles(arg):
  config = files.load("configs/ablations.py" + (f":{arg}" if arg else ""))
  result = profile.profile(config.model, config.data.image_size)
  assert result["macs"] > 0 and result["params"] > 0
  assert config.data.name.startswith("digit_scenes/")


def test_args_change_the_fields_they_name():
  load = lambda a: files.load(f"configs/ablations.py:{a}")
  base = load("seed=0")
  assert (base.model.vt.tokenizer, base.model.vt.recurrent, base.model.vt.interaction,
          base.model.vt.projector, base.model.vt.resize, base.model.vt.tokens) == (
              "filter", True, "transformer", True, "bilinear", 16)
  assert load("tokenizer=pooling,resize=antialiased").model.vt.resize == "antialiased"
  assert load("recurrent=false").model.vt.recurrent is False
  assert load("tokens=64").model.vt.tokens == 64
  assert base.model.vt.recurrent_logits == "normalized"  # the preset's
  assert load("recurrent_logits=paper").model.vt.recurrent_logits == "paper"
  assert load("variant=v1").model.vt.position_encoding is True  # v1's preset
  assert load("variant=v1,position_encoding=false").model.vt.position_encoding is False
  assert load("seed=2").seed == 2
  small = load("width=4,epochs=6,canvas=32,clutter=true")
  assert (small.model.width, small.num_epochs, small.data.name) == (
      4, 6.0, "digit_scenes/32_clutter")
  resnet = load("model=resnet")
  assert resnet.model.name == "resnet" and resnet.model.width == base.model.width
  # The small study's baseline is cheaper than the ResNet of the same width and data.
  assert profile.profile(base.model, 64)["macs"] < profile.profile(resnet.model, 64)["macs"]


@pytest.mark.parametrize("arg", ["data=imagenet", "data=imagenet,tokenizer=clustering,depth=34",
                                 "data=imagenet,variant=v1,interaction=graphconv",
                                 "data=imagenet,model=resnet,depth=50"])
def test_imagenet_args_build_the_paper_models(arg):
  config = files.load(f"configs/ablations.py:{arg}")
  assert config.data.name == "imagenet2012" and config.model.num_classes == 1000
  models.create_model(config.model)
  if arg == "data=imagenet":  # the paper's VT-R18 at 224 (docs/paper_vs_vt_jax.md: 1.544 GMACs)
    assert profile.profile(config.model, 224)["macs"] == pytest.approx(1.544e9, rel=1e-3)


@pytest.mark.parametrize("arg,match", [("tokenizer=kmeans", "tokenizer='kmeans'"),
                                       ("depth=20", "depth=20"),
                                       ("recurrent_logits=eq2", "recurrent_logits='eq2'"),
                                       ("data=imagenet,width=4", "digit_scenes args"),
                                       ("tokns=3", "unknown config arg 'tokns'")])
def test_bad_args_fail_naming_the_arg(arg, match):
  with pytest.raises(ValueError, match=match):
    files.load(f"configs/ablations.py:{arg}")
