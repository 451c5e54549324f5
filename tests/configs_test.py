"""Every experiment config (and variant) loads and passes `config_lib.validate`: a config that names a
missing key or an out-of-range value fails here, not minutes into a run."""

import glob
import os

import pytest

from neuralir_jax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINING = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                  if not os.path.basename(p).startswith(("_", "common", "ablation_")))
VARIANTS = ["sbert_nli.py:runlocal", "infonce_nli.py:runlocal", "cross_encoder_scifact.py:duo",
            "augsbert_stsb.py:silver"]


@pytest.mark.parametrize("name", TRAINING + VARIANTS)
def test_config_loads_and_validates(name):
  config = config_lib.load_config(os.path.join(REPO, "configs", name))
  config_lib.validate(config)


def test_margin_mse_variant_needs_its_teacher():
  config = config_lib.load_config(os.path.join(REPO, "configs", "scifact.py:margin_mse"))
  with pytest.raises(ValueError, match="distill.teacher.*set --config.distill.teacher=CE_DIR_OR_WORKDIR"):
    config_lib.validate(config)
  config_lib.validate(config_lib.apply_overrides(config, ["--config.distill.teacher=workdirs/ce"]))
