"""The teacher's config check: which model fields differ from the run that trained it."""

from vt_jax.train import teacher


def test_diff_names_nested_fields_and_counts_tuples_as_lists():
  saved = {"depth": 18, "vt": {"tokens": 16, "pair": (1, 2), "heads": 4}}
  given = {"depth": 18, "vt": {"tokens": 8, "pair": [1, 2], "heads": 4, "extra": 1}}
  assert teacher._diff(saved, given, "model") == [  # pylint: disable=protected-access
      "model.vt.extra: '<absent>' in the teacher config, 1 in the run",
      "model.vt.tokens: 16 in the teacher config, 8 in the run"]
  assert teacher._diff(saved, saved, "model") == []  # pylint: disable=protected-access
