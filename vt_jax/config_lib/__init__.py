"""Helpers that config files use to build ConfigDicts (no model, data or train code).

Config files in `configs/` import these so that a recipe is written once and
every model file reads top to bottom (big_vision's `configs.common` pattern).
"""
