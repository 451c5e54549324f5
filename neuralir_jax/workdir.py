"""A training workdir: its layout, the files written beside the checkpoints, and reading a trained model back.

  WORKDIR/neuralir_workdir.json   marker: neuralir trains here (a foreign directory is never written into)
  WORKDIR/config.json             the resolved training config (model.* filled in from a pretrained dir)
  WORKDIR/tokenizer/              the tokenizer files, so the workdir evaluates and exports on its own
  WORKDIR/checkpoints/<step>/     Orbax: train state, data-iterator position, config (`checkpoint.py`)
  WORKDIR/metrics.jsonl, tensorboard/   training metrics (`metric_writer.py`)

Paths go through `etils.epath`, as Orbax's do, so WORKDIR may be a cloud bucket (gs://...). `read` returns
plain data (config dict, params, tokenizer directory, step; `prompts` from the config); it never imports
the training loop.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from etils import epath

from neuralir_jax import checkpoint, tokenization

MARKER = "neuralir_workdir.json"
PROMPT_NAMES = ("query", "document")  # The prompts of a training config's model.prompts.
CONFIG = "config.json"
TOKENIZER = "tokenizer"


def is_workdir(path: str) -> bool:
  """True for a training workdir (it has checkpoints/), false for a model directory."""
  return (epath.Path(path) / checkpoint.CHECKPOINTS).is_dir()


def check_writable(workdir: str) -> None:
  """Refuses a workdir that exists and holds files neuralir did not write there (e.g. an exported model,
  whose config.json training would overwrite). New, empty and earlier neuralir workdirs are fine."""
  path = epath.Path(workdir)
  if not path.exists():
    return
  if not path.is_dir():
    raise ValueError(f"--workdir {workdir} is a file: pass a directory (new or an earlier workdir).")
  names = sorted(p.name for p in path.iterdir())
  if not names or MARKER in names or checkpoint.CHECKPOINTS in names:
    return
  raise ValueError(f"--workdir {workdir} is not empty and is not a neuralir workdir (it holds {names[:5]}); "
                   "pass a new or empty directory, so nothing in it is overwritten.")


def write_files(workdir: str, config_dict: dict, tokenizer: tokenization.Tokenizer) -> None:
  """The marker, config.json and the tokenizer (main process only; after `check_writable`)."""
  path = epath.Path(workdir)
  (path / TOKENIZER).mkdir(parents=True, exist_ok=True)
  (path / MARKER).write_text(json.dumps({"written_by": "neuralir_jax train"}) + "\n")
  (path / CONFIG).write_text(json.dumps(config_dict, indent=2, default=str) + "\n")
  for name in tokenizer.files:
    (path / TOKENIZER / name).write_bytes(tokenizer.file_bytes(name))


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A workdir's checkpoint as plain data."""
  config: dict  # The training config (as saved in the checkpoint).
  params: dict  # {'encoder': ..., 'heads'?: {'nli': ...}, 'log_temperature'?}, on the default device.
  tokenizer_dir: str  # A local directory with the tokenizer files.
  step: int

  @property
  def prompts(self) -> dict[str, str]:
    """The non-empty prompts of the config's model.prompts, e.g. {"query": "query: "} ({} for a config
    written before prompts existed)."""
    prompts = self.config.get("model", {}).get("prompts") or {}
    return {name: prompts[name] for name in PROMPT_NAMES if prompts.get(name)}


def read(workdir: str, step: int | None = None) -> TrainedModel:
  """The latest checkpoint of a workdir (or the one at `step`)."""
  params, config, step = checkpoint.restore_params_and_config(workdir, step)
  tokenizer = epath.Path(workdir) / TOKENIZER
  if not tokenizer.is_dir():
    raise FileNotFoundError(f"{tokenizer}: missing; this workdir was not written by neuralir train.")
  if not _is_local(workdir):  # tokenizers reads local files only.
    local = epath.Path(tempfile.mkdtemp(prefix="neuralir_tokenizer_"))
    for file in tokenizer.iterdir():
      (local / file.name).write_bytes(file.read_bytes())
    tokenizer = local
  return TrainedModel(config=config, params=params, tokenizer_dir=str(tokenizer), step=step)


def _is_local(path: str) -> bool:
  return "://" not in str(path)

