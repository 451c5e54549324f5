"""Pool negatives: other queries' relevant documents as extra negatives of mined records (data.pool_negatives).

A re-ranker trained only on each query's mined hard negatives can learn what a relevant document looks like
in general (for SciFact, "a cited abstract") instead of what answers this query. Another query's positive
has that look without the answer, so it separates the two. Each record gets m of them, drawn with the seed
from the distinct positives of all rows, never a positive of its own query (over every row of that query)
nor one of its hard negatives; documents are matched by id where the file gives ids, and by text always.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

Document = tuple[str, "str | None"]  # (text, id or None)


def positive_pool(rows: Sequence[dict]) -> list[Document]:
  """The distinct positives of all rows (by id when given, else text), in file order."""
  seen, pool = set(), []
  for r in rows:
    for j, text in enumerate(r["positives"]):
      doc_id = r["positive_ids"][j] if r["positive_ids"] is not None else None
      key = doc_id if doc_id is not None else text
      if key not in seen:
        seen.add(key)
        pool.append((text, doc_id))
  return pool


def _query_key(row: dict) -> str:
  return row["query_id"] if row.get("query_id") is not None else row["query"]


def own_documents(rows: Sequence[dict]) -> dict[str, set[str]]:
  """{query id (or text): the ids and texts of its positives over all its rows}."""
  own: dict[str, set[str]] = {}
  for r in rows:
    own.setdefault(_query_key(r), set()).update(r["positives"], r["positive_ids"] or ())
  return own


def draw(pool: Sequence[Document], excluded: set[str], m: int, rng: np.random.Generator) -> list[Document]:
  """m distinct pool documents whose text and id are not in `excluded` (fewer if the pool has fewer).
  Draws uniformly by rejection, and walks a permutation only when rejections pile up (a small pool)."""
  picks, taken = [], set()
  for _ in range(8 * m):
    i = int(rng.integers(len(pool))) if pool else 0
    if pool and i not in taken and not {pool[i][0], pool[i][1]} & excluded:
      taken.add(i)
      picks.append(pool[i])
      if len(picks) == m:
        return picks
  for i in rng.permutation(len(pool)):
    if int(i) not in taken and not {pool[i][0], pool[i][1]} & excluded:
      taken.add(int(i))
      picks.append(pool[i])
      if len(picks) == m:
        break
  return picks


def add_pool_negatives(record: dict, row: dict, own: dict[str, set[str]], pool: Sequence[Document], m: int,
                       rng: np.random.Generator, path: str) -> None:
  """Appends m pool documents to the record's negatives (and ids, while every negative has one)."""
  negatives, ids = record.get("negative", []), record.get("negative_id", [])
  negatives = [negatives] if isinstance(negatives, str) else list(negatives)
  ids = [ids] if isinstance(ids, str) else list(ids)
  excluded = own[_query_key(row)] | set(negatives) | set(ids)
  picks = draw(pool, excluded, m, rng)
  if len(picks) < m:
    raise ValueError(f"{path}:{row['line']}: data.pool_negatives={m}, but only {len(picks)} positives of other "
                     "queries are neither this query's positives nor its hard negatives; lower it.")
  record["negative"] = negatives + [text for text, _ in picks]
  if len(ids) == len(negatives) and all(doc_id is not None for _, doc_id in picks):
    record["negative_id"] = ids + [doc_id for _, doc_id in picks]
  else:
    record.pop("negative_id", None)
