import pytest

from vt_jax.config_lib import args


def test_parse_arg_casts_and_flags():
  cfg = args.parse_arg("v1,tokens=32,name=x", v1=False, tokens=16, name="a")
  assert cfg.v1 is True and cfg.tokens == 32 and cfg.name == "x"


def test_parse_arg_defaults_untouched():
  cfg = args.parse_arg(None, v1=False, tokens=16)
  assert cfg.v1 is False and cfg.tokens == 16


@pytest.mark.parametrize("arg,msg", [
    ("tokns=3", "unknown config arg 'tokns'"),
    ("tokens=abc", "expected int"),
    ("tokens", "needs a value"),
    ("v1=maybe", "expected a boolean"),
])
def test_parse_arg_errors_name_the_field(arg, msg):
  with pytest.raises(ValueError, match=msg):
    args.parse_arg(arg, v1=False, tokens=16)
