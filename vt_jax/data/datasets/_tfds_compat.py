"""Works around a tensorflow-datasets 4.9.10 defect for builders outside its package.

`DatasetBuilder.code_path` evaluates `isinstance(path, importlib_resources.abc.Traversable)`,
but tfds only declares the `importlib_resources` backport for Python < 3.9, so on
Python 3.11 `download_and_prepare()` of any builder defined in an installed
package fails with `ModuleNotFoundError: importlib_resources`. Our builders
report their own source file instead (what tfds would compute anyway for a
regular file-system package); tfds uses it only to look for a checksums file,
and our builders download nothing.
"""

from __future__ import annotations

import inspect

from etils import epath
import tensorflow_datasets as tfds


class LocalCodePath:
  """Mixin for tfds builders: `code_path` = the defining module's file."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:  # pylint: disable=no-self-argument
    return epath.Path(inspect.getfile(cls))
