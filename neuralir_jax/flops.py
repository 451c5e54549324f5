"""Model FLOPs of a training step and model FLOPs utilisation (MFU).

Per encoded sequence of length L: 6 * N_nonembedding * L (forward + backward of every matmul weight) plus
12 * layers * L^2 * d for attention scores and their weighted sum (bidirectional: every token attends to every
token, so nothing is halved). A training example encodes several sequences (anchor, positive, negatives).
The contrastive logits add 6 * Q * C * D per step (2 forward + 4 backward per multiply-add), Q queries
against C candidates each. Recomputation (GradCache's second forward, remat) is not counted: this is model
FLOPs, not hardware FLOPs.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from neuralir_jax.model import BertConfig

# Dense bf16 peak FLOP/s per chip; matched against `device_kind` in order, first substring wins.
PEAK_FLOPS = (
    ("h200", 989e12),
    ("h100", 989e12),
    ("a100", 312e12),
    ("v6", 918e12),
    ("v5 lite", 197e12),
    ("v5e", 197e12),
    ("v5p", 459e12),
    ("v5", 459e12),
    ("v4", 275e12),
)


def nonembedding_params(bert: BertConfig) -> int:
  """Weights the encoder uses per token, excluding token/position/type embeddings and the unused pooler."""
  d, i = bert.hidden_size, bert.intermediate_size
  per_layer = 4 * (d * d + d) + (d * i + i) + (i * d + d) + 2 * 2 * d
  return bert.num_hidden_layers * per_layer + 2 * d  # + the embeddings' LayerNorm.


def flops_per_sequence(bert: BertConfig, seq_len: int) -> float:
  """Forward + backward model FLOPs of encoding one sequence of seq_len tokens."""
  return (6.0 * nonembedding_params(bert) * seq_len
          + 12.0 * bert.num_hidden_layers * seq_len ** 2 * bert.hidden_size)


def encoder_flops(bert: BertConfig, lengths: Sequence[int] | np.ndarray) -> float:
  """Forward + backward model FLOPs of encoding texts of these real lengths (each at its own length, so
  padding and the attention across texts of a packed row are not counted)."""
  lengths = np.asarray(lengths, np.float64)
  return (6.0 * nonembedding_params(bert) * lengths.sum()
          + 12.0 * bert.num_hidden_layers * (lengths ** 2).sum() * bert.hidden_size)


def contrastive_flops_per_step(num_queries: int, candidates_per_query: int, dim: int) -> float:
  """Forward + backward FLOPs of the [Q, C] similarity matmul summed over all devices."""
  return 6.0 * num_queries * candidates_per_query * dim


def train_flops_per_step(bert: BertConfig, seq_lens: Sequence[int], global_batch: int,
                         candidates_per_query: int = 0, symmetric_candidates: int = 0) -> float:
  """Model FLOPs of one step: every example encodes one sequence per entry of seq_lens (padded lengths),
  plus InfoNCE logits (candidates_per_query: 1 + negatives per query; 0 when InfoNCE is off) and the
  symmetric term's (candidates of each positive: queries visible to it)."""
  encoder = global_batch * sum(flops_per_sequence(bert, length) for length in seq_lens)
  logits = contrastive_flops_per_step(global_batch, candidates_per_query + symmetric_candidates,
                                      bert.hidden_size)
  return encoder + logits


def peak_flops_per_device(device: jax.Device | None = None, cpu_peak: float | None = None) -> float | None:
  """Peak dense bf16 FLOP/s of a device from its kind; cpu_peak (a config value, or None) on CPU."""
  device = jax.devices()[0] if device is None else device
  if device.platform == "cpu":
    return cpu_peak
  kind = device.device_kind.lower()
  for name, peak in PEAK_FLOPS:
    if name in kind:
      return peak
  return None


def mfu(flops_per_step: float, seconds_per_step: float, num_devices: int,
        peak_per_device: float | None) -> float | None:
  """Achieved model FLOP/s over the devices' combined peak; None when the peak is unknown."""
  if not peak_per_device or seconds_per_step <= 0:
    return None
  return flops_per_step / seconds_per_step / (num_devices * peak_per_device)
