"""PyLate's ColBERT directories (pylate.models.ColBERT 1.x, on sentence-transformers 5), read and written.

PyLate 1.6 pins sentence-transformers 5.3 and cannot import a sentence-transformers 6 MultiVectorEncoder
directory (`colbert.save_multi_vector_directory`), so the same files do not serve both; this is PyLate's own
layout: the BERT body and tokenizer at the root, `pylate.models.Dense.Dense` in 1_Dense, and the encoding
settings in config_sentence_transformers.json (PYLATE_DEFAULTS where a key is absent). PyLate inserts one
marker token after [CLS] (`query_prefix` / `document_prefix`), truncates queries to `query_length` and pads
them with [MASK] (attended or not), truncates documents to `document_length` and drops the skiplist's tokens
from documents. A colbert.MultiVectorEncoder does the same with the marker as a special piece at the start of
its prompt (the same ids). tests/colbert_test.py checks both directions against vectors PyLate computed
(tests/data/pylate_tiny); benchmarks/pylate_parity.sh against PyLate itself.
"""

from __future__ import annotations

import json
import os
import string

from neuralir_jax import colbert, hf_io, tokenization

MODULES = ("sentence_transformers.models.Transformer", "pylate.models.Dense.Dense")
DEFAULTS = {"query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 32, "document_length": 180,
            "attend_to_expansion_tokens": False, "skiplist_words": list(string.punctuation),
            "do_query_expansion": True}


def is_pylate_directory(path: str) -> bool:
  """Whether modules.json in `path` names a PyLate module."""
  file = os.path.join(path, "modules.json")
  if not os.path.isfile(file):
    return False
  with open(file) as f:
    try:
      entries = json.load(f)
    except json.JSONDecodeError:
      return False
  return isinstance(entries, list) and any(str(e.get("type", "")).startswith("pylate.") for e in entries
                                           if isinstance(e, dict))


def _special_token(config: dict, key: str, fallback: str) -> str:
  value = config.get(key) or fallback
  return value["content"] if isinstance(value, dict) else value


def load_pylate_directory(path: str) -> tuple[colbert.MultiVectorConfig, dict, tokenization.Tokenizer]:
  """(config, params, tokenizer) encoding as PyLate does with this directory; one-line errors for what
  PyLate would encode otherwise and this module does not reproduce."""
  file = os.path.join(path, "modules.json")
  entries = hf_io._read_json(file)
  types = tuple(e.get("type") for e in entries)
  if types != MODULES:
    raise hf_io.ModelDirectoryError(f"{file}: a PyLate ColBERT here is {list(MODULES)} (one linear projection); "
                                    f"got {list(types)}.")
  body, dense_dir = (os.path.join(path, e.get("path", "")) for e in entries)
  bert, params = colbert.read_body_and_projection(body, dense_dir)
  st_file = os.path.join(path, "config_sentence_transformers.json")
  st = {**DEFAULTS, **{k: v for k, v in hf_io._read_json(st_file).items() if v is not None}}
  if str(st.get("similarity_fn_name") or "MaxSim").lower() != "maxsim":
    raise hf_io.ModelDirectoryError(f"{st_file}: similarity_fn_name {st['similarity_fn_name']!r}; PyLate "
                                    "ColBERT models score with MaxSim.")
  if st.get("default_prompt_name") or any((st.get("prompts") or {}).values()):
    raise hf_io.ModelDirectoryError(f"{st_file}: prompts {st.get('prompts')} / default_prompt_name "
                                    f"{st.get('default_prompt_name')!r} are not supported; only the prefixes.")
  sbert = hf_io._read_json(os.path.join(body, "sentence_bert_config.json"), required=False) or {}
  if sbert.get("do_lower_case"):
    raise hf_io.ModelDirectoryError(f"{body}/sentence_bert_config.json: do_lower_case=true is not supported "
                                    "(lowercase in the tokenizer's normalizer instead).")
  query_length, document_length = int(st["query_length"]), int(st["document_length"])
  tokenizer = tokenization.Tokenizer(body, max_length=min(max(query_length, document_length), bert.max_positions))
  tok = tokenizer._tok
  tok_config = hf_io._read_json(os.path.join(body, "tokenizer_config.json"), required=False) or {}
  prompts = {}
  for task in colbert.TASKS:
    prefix = str(st[f"{task}_prefix"])
    if prefix and tok.token_to_id(prefix) is None:
      raise hf_io.ModelDirectoryError(f"{st_file}: {task}_prefix {prefix!r} is not a token of {body}'s "
                                      "tokenizer (PyLate adds it to the vocabulary when it builds the model).")
    if prefix:
      tokenizer.add_special_tokens([prefix])
    prompts[task] = prefix if not prefix or prefix[-1].isspace() else prefix + " "
  expansion = None
  if st["do_query_expansion"]:
    mask = _special_token(tok_config, "mask_token", "[MASK]")
    if tok.token_to_id(mask) is None:
      raise hf_io.ModelDirectoryError(f"{st_file}: do_query_expansion needs the mask token; {body}'s tokenizer "
                                      f"has no {mask!r}.")
    expansion = {"length": query_length, "attend": bool(st["attend_to_expansion_tokens"]),
                 "token_id": tok.token_to_id(mask)}
  unk = tok.token_to_id(_special_token(tok_config, "unk_token", "[UNK]"))
  words = list(st["skiplist_words"])
  skip = {i for w in words for i in [tok.token_to_id(w)] if i is not None}
  if unk is not None and any(tok.token_to_id(w) is None for w in words):
    skip.add(unk)  # PyLate's convert_tokens_to_ids maps an unknown word to [UNK].
  config = colbert.MultiVectorConfig(
      bert=bert, dim=int(params["projection"]["kernel"].shape[1]), max_length=tokenizer.max_length,
      prompts=prompts, lengths={"query": query_length, "document": document_length}, expansion=expansion,
      skiplist_ids=tuple(sorted(skip)), skiplist_tasks=("document",))
  return config, params, tokenizer


def prefix_of(model: colbert.MultiVectorEncoder, task: str) -> str:
  """The one marker token PyLate inserts after [CLS] for `task`, when the prompt tokenises as exactly that
  token followed by the text's own tokens ("[unused0] " -> "[unused0]", "[Q] " stays "[Q] ")."""
  prompt = model.config.prompts.get(task, "")
  if not prompt:
    return ""
  tok = model.tokenizer
  for prefix in (prompt.rstrip(), prompt):
    marker = tok._tok.token_to_id(prefix) if prefix else None
    if marker is None:
      continue
    probe = ["what is it", "x"]
    plain, prompted = tok.token_ids(probe, 64), tok.token_ids([prompt + t for t in probe], 64)
    if all(b == a[:1] + [marker] + a[1:] for a, b in zip(plain, prompted)):
      return prefix
  raise ValueError(f"model.prompts.{task}={prompt!r}: PyLate marks a {task} with one token inserted after "
                   "[CLS]; this prompt does not tokenise as one token before the text. Export with --format "
                   "sentence-transformers, or train with a marker such as '[unused0] '.")


def save_pylate_directory(output_dir: str, model: colbert.MultiVectorEncoder, overwrite: bool = False, *,
                          source: str | None = None) -> None:
  """Writes `model` in PyLate's layout, with settings under which PyLate encodes as `model` does."""
  output_dir = os.fspath(output_dir)
  c = model.config
  problems = []
  if c.length_normalize:
    problems.append("it scores with meanmaxsim (PyLate: MaxSim)")
  if c.skiplist_ids and tuple(c.skiplist_tasks) != ("document",):
    problems.append(f"its skiplist applies to {list(c.skiplist_tasks)} (PyLate: documents only)")
  mask_id = next((i for t in ("[MASK]", "<mask>") for i in [model.tokenizer._tok.token_to_id(t)] if i is not None),
                 None)
  if c.expansion and c.expansion["token_id"] != mask_id:
    problems.append("its queries are expanded with a token other than the mask token (PyLate pads with it)")
  if c.expansion and c.expansion["length"] > c.max_length:
    problems.append(f"its query expansion length {c.expansion['length']} exceeds its {c.max_length} tokens")
  if problems:
    raise ValueError(f"--format pylate: {'; '.join(problems)}; export with --format sentence-transformers.")
  prefixes = {task: prefix_of(model, task) for task in colbert.TASKS}
  colbert.write_body_and_projection(output_dir, model, overwrite, source, {"use_residual": False})
  hf_io._write_json(os.path.join(output_dir, "modules.json"), [
      {"idx": 0, "name": "0", "path": "", "type": MODULES[0]},
      {"idx": 1, "name": "1", "path": "1_Dense", "type": MODULES[1]}])
  # The lengths this model encodes with (MultiVectorEncoder._inputs truncates at max_length too).
  query_length = c.expansion["length"] if c.expansion else min(c.lengths.get("query") or c.max_length, c.max_length)
  document_length = min(c.lengths.get("document") or c.max_length, c.max_length)
  hf_io._write_json(os.path.join(output_dir, "sentence_bert_config.json"),
                    {"max_seq_length": c.max_length, "do_lower_case": False})
  hf_io._write_json(os.path.join(output_dir, "config_sentence_transformers.json"), {
      "model_type": "ColBERT",
      "__version__": {"sentence_transformers": "5.3.0", "transformers": hf_io._version("transformers", "5.0.0"),
                      "pytorch": hf_io._version("torch", "2.0.0")},
      "prompts": {"query": "", "document": ""}, "default_prompt_name": None, "similarity_fn_name": "MaxSim",
      "query_prefix": prefixes["query"], "document_prefix": prefixes["document"], "query_length": query_length,
      "document_length": document_length, "attend_to_expansion_tokens": bool(c.expansion and c.expansion["attend"]),
      "skiplist_words": [model.tokenizer._tok.id_to_token(i) for i in c.skiplist_ids],
      "do_query_expansion": bool(c.expansion)})
