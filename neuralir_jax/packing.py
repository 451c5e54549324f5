"""Sequence packing: several texts per fixed-length row: little compute on padding, and static shapes.

`assign_rows` places texts into rows of L tokens holding at most S texts each, best-fit decreasing (longest
text first, each into the open row it fills most tightly, else a new row): the worst case of first-fit
decreasing (~11/9 of the fewest rows possible), typically within 1-2% of the token count's bound while the
slot cap does not bind (texts averaging over L / S tokens). It is deterministic and costs a sort plus a few
integer operations per text (a bitmask over free space finds the best row): millions of texts in seconds.
`pack` lays the token ids out with per-token segment ids (0 padding, s + 1 for slot s) and position ids
restarting at 0 for each text, as `model.SentenceEncoder.packed` takes them; `PackedRows.gather` puts its
[R, S, D] output back in input order.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PackedRows:
  """Texts packed into R rows of L tokens; text i is slot slot_N[i] of row row_N[i] (segment id slot + 1)."""
  ids_RxL: np.ndarray  # int32 token ids; pad_id where no text.
  segment_ids_RxL: np.ndarray  # int32: 0 padding, s + 1 for the text in slot s.
  position_ids_RxL: np.ndarray  # int32: 0..len-1 within each text, 0 on padding.
  row_N: np.ndarray  # int32 row of each text, in input order.
  slot_N: np.ndarray  # int32 slot of each text in its row: 0..S-1, in placement order.

  def gather(self, emb_RxSxD: np.ndarray) -> np.ndarray:
    """Per-slot embeddings [R, S, D] -> per-text embeddings [n, D] in input order."""
    return emb_RxSxD[self.row_N, self.slot_N]


def assign_rows(lengths: Sequence[int] | np.ndarray, row_length: int,
                max_slots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(row_N, slot_N, offset_N) int32: the row, slot and first column of each text, best-fit decreasing.

  Texts are taken longest first (ties in input order); each goes into the open row with the least free
  space that still holds it (ties: the row that reached that space last), or opens a new row. A row closes
  when full or holding max_slots texts. Rows are numbered in the order they open, slots in placement order.
  """
  lengths_N = np.asarray(lengths, np.int64).reshape(-1)
  if row_length < 1 or max_slots < 1:
    raise ValueError(f"row_length={row_length}, max_slots={max_slots}: both must be >= 1.")
  if lengths_N.size and (lengths_N.min() < 1 or lengths_N.max() > row_length):
    raise ValueError(f"text lengths must be in [1, row_length={row_length}]; got "
                     f"{lengths_N.min()}..{lengths_N.max()} (truncate texts to the row length first).")
  order_N = np.argsort(-lengths_N, kind="stable")
  open_rows: list[list[int]] = [[] for _ in range(row_length + 1)]  # [free tokens] -> rows with a free slot.
  free_bits = 0  # Bit c set <=> open_rows[c] is non-empty; (bits >> s) & -(bits >> s) finds best fit.
  texts_in_row: list[int] = []
  placed = []  # (row, slot, offset) per text, in `order_N` order.
  for length in lengths_N[order_N].tolist():
    fits = free_bits >> length
    if fits:
      free = length + (fits & -fits).bit_length() - 1  # Least free space >= length.
      rows = open_rows[free]
      row = rows.pop()
      if not rows:
        free_bits &= ~(1 << free)
    else:
      row, free = len(texts_in_row), row_length
      texts_in_row.append(0)
    slot = texts_in_row[row]
    placed.append((row, slot, row_length - free))
    texts_in_row[row] = slot + 1
    free -= length
    if free and slot + 1 < max_slots:
      open_rows[free].append(row)
      free_bits |= 1 << free
  out = np.zeros((3, lengths_N.size), np.int32)
  if placed:
    out[:, order_N] = np.array(placed, np.int32).T
  return out[0], out[1], out[2]


def pack(token_ids: Sequence[Sequence[int]], row_length: int, max_slots: int, pad_id: int = 0,
         min_rows: int = 0) -> PackedRows:
  """Token-id lists (each 1..row_length long) packed into rows by `assign_rows`; at least min_rows rows
  (extra rows are all padding). The layout is vectorised over tokens: no Python loop per token or row."""
  lengths_N = np.fromiter((len(x) for x in token_ids), np.int64, count=len(token_ids))
  row_N, slot_N, offset_N = assign_rows(lengths_N, row_length, max_slots)
  num_rows = max(int(row_N.max(initial=-1)) + 1, min_rows)
  total = int(lengths_N.sum())
  tokens_T = np.fromiter(itertools.chain.from_iterable(token_ids), np.int32, count=total)
  text_T = np.repeat(np.arange(lengths_N.size), lengths_N)  # The text of each token.
  position_T = np.arange(total) - np.repeat(np.cumsum(lengths_N) - lengths_N, lengths_N)
  rows_T, cols_T = row_N[text_T], offset_N[text_T] + position_T
  ids_RxL = np.full((num_rows, row_length), pad_id, np.int32)
  segment_ids_RxL = np.zeros((num_rows, row_length), np.int32)
  position_ids_RxL = np.zeros((num_rows, row_length), np.int32)
  ids_RxL[rows_T, cols_T] = tokens_T
  segment_ids_RxL[rows_T, cols_T] = slot_N[text_T] + 1
  position_ids_RxL[rows_T, cols_T] = position_T
  return PackedRows(ids_RxL, segment_ids_RxL, position_ids_RxL, row_N, slot_N)


def default_slots(row_length: int, max_slots: int = 0) -> int:
  """Texts per row at most: max_slots, or (0) row_length // 8, so a row fills when its texts average
  8 tokens or more (a text is at least [CLS] [SEP]); the training input and the model agree through it."""
  return max_slots if max_slots > 0 else max(1, row_length // 8)


@dataclasses.dataclass(frozen=True)
class DeviceRows:
  """Texts packed per device: R rows each, device d (of the kept ones) at rows d*R..(d+1)*R-1."""
  ids_RxL: np.ndarray  # int32 token ids of the kept devices' rows.
  segment_ids_RxL: np.ndarray  # int32: 0 padding, s + 1 for slot s.
  index_N: np.ndarray  # int32 per text (input order): row within its device * max_slots + slot.
  rows_per_device: int


def pack_per_device(token_ids: Sequence[Sequence[int]], device_N: Sequence[int] | np.ndarray, num_devices: int,
                    row_length: int, max_slots: int, row_multiple: int = 1, pad_id: int = 0,
                    keep: range | None = None) -> DeviceRows:
  """Each device's texts (device_N[i] is text i's) packed by `pack` into its own rows, every device padded
  to the same R rows: the most any device needs, rounded up to row_multiple (a few static shapes). Only the
  rows of the devices in `keep` (default all) are returned; index_N covers every text, local to its device.
  """
  device_N = np.asarray(device_N, np.int64)
  keep = range(num_devices) if keep is None else keep
  packs = [pack([token_ids[i] for i in np.flatnonzero(device_N == d)], row_length, max_slots, pad_id)
           for d in range(num_devices)]
  most = max(p.ids_RxL.shape[0] for p in packs)
  rows = -(-max(most, 1) // row_multiple) * row_multiple
  index_N = np.zeros(device_N.size, np.int32)
  ids, segments = [], []
  for d, p in enumerate(packs):
    index_N[device_N == d] = p.row_N * max_slots + p.slot_N
    if d in keep:
      extra = ((0, rows - p.ids_RxL.shape[0]), (0, 0))
      ids.append(np.pad(p.ids_RxL, extra, constant_values=pad_id))
      segments.append(np.pad(p.segment_ids_RxL, extra))
  return DeviceRows(np.concatenate(ids), np.concatenate(segments), index_N, rows)
