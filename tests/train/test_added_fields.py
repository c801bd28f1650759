"""Runs saved before a model field existed keep the function they trained with."""

import json
import os

import pytest

from vt_jax.config_lib import files as config_files
from vt_jax.train import checkpoint
from vt_jax.train import run_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _older_run(tmp_path, spec, drop):
  """A workdir whose config.json is `spec`'s without the model.vt fields in `drop`."""
  config = config_files.load(os.path.join(ROOT, spec))
  saved = json.loads(config.to_json())
  for field in drop:
    del saved["model"]["vt"][field]
  with open(tmp_path / "config.json", "w") as f:
    json.dump(saved, f)
  return config


# Runs saved before model.vt.recurrent_logits existed computed the literal Eq. 2 ('paper');
# before model.vt.kernel_init existed their VT maps started from flax's default ('flax').
@pytest.mark.parametrize("field,old_value", [("recurrent_logits", "paper"),
                                             ("kernel_init", "flax")])
def test_older_vt_resnet_run_reads_as_it_trained(tmp_path, field, old_value):
  config = _older_run(tmp_path, "configs/quickstart.py", [field])
  assert run_config.load(str(tmp_path)).model.vt[field] == old_value
  assert checkpoint.read_config(str(tmp_path)).model.vt[field] == old_value
  # Resuming it under today's default would change the model: refused, naming the field.
  with pytest.raises(run_config.ConfigMismatchError, match=rf"model\.vt\.{field}"):
    run_config.check_against_saved(config, str(tmp_path), log=False)
  config.model.vt[field] = old_value  # the way out the message names
  run_config.check_against_saved(config, str(tmp_path), log=False)


def test_older_vt_fpn_run_reads_as_the_first_form(tmp_path):
  config = _older_run(tmp_path, "configs/quickstart_seg.py:model=vt_fpn",
                      ["top_down", "zero_init_value"])
  vt = run_config.load(str(tmp_path)).model.vt
  assert (vt.top_down, vt.zero_init_value) == (False, False)
  assert "recurrent_logits" not in vt  # VT-FPN has no recurrent tokenizer
  config.model.vt.update(top_down=False, zero_init_value=False)
  run_config.check_against_saved(config, str(tmp_path), log=False)

