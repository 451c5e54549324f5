"""Orbax checkpoints of a training workdir: train state, data-iterator position and config, per step.

Layout: `WORKDIR/checkpoints/<step>/{state, data, config}` (WORKDIR local or wherever Orbax writes, e.g. gs://). The state is saved asynchronously with
`StandardSave` (each host writes its own shards); the data-iterator state and the config are JSON. A
restore takes an abstract target with the *current* shardings, so a run saved on 8 devices resumes on 1.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

CHECKPOINTS = "checkpoints"


def directory(workdir: str) -> epath.Path:
  """WORKDIR/checkpoints, absolute (Orbax needs it) when local."""
  workdir = str(workdir)
  return epath.Path(workdir if "://" in workdir else os.path.abspath(workdir)) / CHECKPOINTS


def manager(workdir: str, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
  """Keeps the `keep` (>= 1) latest checkpoints; the final one is always among them."""
  if keep < 1:
    raise ValueError(f"checkpoint.keep={keep} would delete every checkpoint: set it to 1 or more.")
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
  return ocp.CheckpointManager(directory(workdir), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_state: dict, config: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave(data_state),
      config=ocp.args.JsonSave(config)), force=True)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, dict]:
  """Restores (state, data_state) at `step` onto the shardings of `abstract_state`."""
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
  except ValueError as e:
    first = str(e).strip().splitlines()[0]
    raise ValueError(f"checkpoint {mngr.directory}/{step} does not fit this config (model, objectives or "
                     f"optimizer changed since it was saved?): {first} Use a new --workdir.") from None
  return restored.state, restored.data


def restore_config(mngr: ocp.CheckpointManager, step: int) -> dict:
  """The training config saved with checkpoint `step`."""
  return mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config


def restore_params_and_config(workdir: str, step: int | None = None) -> tuple[dict, dict, int]:
  """(params, config dict, step) of a workdir's checkpoint, on the default device: for export/eval."""
  handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
              "config": ocp.JsonCheckpointHandler()}
  mngr = ocp.CheckpointManager(directory(workdir), item_handlers=handlers)
  steps = mngr.all_steps()
  if not steps:
    raise FileNotFoundError(f"{workdir}/checkpoints holds no checkpoint: train first, or pass a model directory.")
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise ValueError(f"{workdir}: no checkpoint at step {step}; available steps: {sorted(steps)}.")
  config = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
  metadata = mngr.item_metadata(step)["state"]
  tree = metadata.tree if hasattr(metadata, "tree") else metadata
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
  mngr.close()
  return state["params"], config, step
