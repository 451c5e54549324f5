"""Experiment configs, one file per experiment; configs/common.py holds every key's default.

`config_lib.load_config("configs/NAME.py[:ARG]")` imports a file as a submodule of its directory, so the
files share defaults with `from . import common` from any current directory.
"""
