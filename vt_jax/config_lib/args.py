"""Parse the `ARG` of `--config=configs/file.py:ARG` (big_vision style).

`ARG` is a comma-separated list of `key=value` items and bare words; a bare
word sets a boolean to True (`v1` == `v1=True`). Every key must be declared
with a default whose type the value is cast to, so a typo fails loudly.
"""

from __future__ import annotations

import ml_collections


def _cast(key: str, raw: str, default):
  if isinstance(default, bool):
    low = raw.lower()
    if low in ("1", "true", "yes", "on"):
      return True
    if low in ("0", "false", "no", "off"):
      return False
    raise ValueError(f"config arg {key}={raw!r}: expected a boolean (true/false)")
  if default is None or isinstance(default, str):
    return raw
  try:
    return type(default)(raw)
  except ValueError as e:
    raise ValueError(
        f"config arg {key}={raw!r}: expected {type(default).__name__}") from e


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Returns a ConfigDict of `defaults` updated from `arg`.

  >>> parse_arg("v1,tokens=32", v1=False, tokens=16).tokens
  32
  """
  result = dict(defaults)
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, sep, raw = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(
          f"unknown config arg {key!r} in {arg!r}; this config accepts: "
          f"{', '.join(sorted(defaults))}")
    if not sep:
      if not isinstance(defaults[key], bool):
        raise ValueError(f"config arg {key!r} needs a value: {key}=...")
      result[key] = True
    else:
      result[key] = _cast(key, raw.strip(), defaults[key])
  return ml_collections.ConfigDict(result)
