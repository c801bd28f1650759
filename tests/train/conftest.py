"""tests/train compile the same tiny model many times: share XLA executables in a session."""

import pytest

from tests.train import train_fakes


@pytest.fixture(scope="session", autouse=True)
def _xla_compile_cache(tmp_path_factory):
  train_fakes.enable_compile_cache(str(tmp_path_factory.mktemp("xla_cache")))
