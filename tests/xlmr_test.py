"""XLM-RoBERTa checkpoints (the usual multilingual students) load into our BERT: == transformers.XLMRobertaModel."""

import json
import os

import numpy as np
import pytest

from neuralir_jax import encoder as encoder_lib
from neuralir_jax import hf_io

WORDS = ["hello", "world", "bonjour", "le", "monde", "hola", "mundo", "the", "cat", "sat", "on", "mat"]


def _word_level_tokenizer(path: str) -> dict:
  """A tokenizer.json in XLM-R's special-token layout (<s> 0, <pad> 1, </s> 2, <unk> 3), words after them."""
  import tokenizers
  from tokenizers import models, pre_tokenizers, processors
  vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"] + WORDS)}
  tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                     special_tokens=[("<s>", 0), ("</s>", 2)])
  tok.save(os.path.join(path, "tokenizer.json"))
  return vocab


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory):
  import torch
  from transformers import XLMRobertaConfig, XLMRobertaModel
  torch.manual_seed(0)
  config = XLMRobertaConfig(vocab_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=40, type_vocab_size=1,
                            pad_token_id=1, bos_token_id=0, eos_token_id=2)
  model = XLMRobertaModel(config).eval()
  path = str(tmp_path_factory.mktemp("xlmr"))
  model.save_pretrained(path)
  _word_level_tokenizer(path)
  return path, model


def test_xlmr_config_and_hidden_states_equal_transformers(xlmr_dir):
  import torch
  path, model = xlmr_dir
  config, params, tokenizer = hf_io.load_hf_directory(path)
  bert = config.bert
  assert (bert.model_type, bert.position_offset, bert.max_positions, tokenizer.pad_id) == ("xlm-roberta", 2, 38, 1)
  assert config.max_seq_length == 38  # 40 position embeddings, the first two before the padding offset.
  texts = ["hello world", "the cat sat on the mat", "bonjour le monde hola mundo", "cat"]
  ids, mask = tokenizer(texts, buckets=None)
  assert ids[3, 3] == 1  # Right padding with <pad>.
  enc = encoder_lib.Encoder(config, params, tokenizer)
  got = enc.encode(texts)
  with torch.no_grad():
    hidden = model(input_ids=torch.tensor(ids, dtype=torch.long),
                   attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
  mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  want = mean / np.linalg.norm(mean, axis=-1, keepdims=True) if config.normalize else mean
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  # Position ids follow the padding offset: the same weights read from position 0 give other embeddings.
  import dataclasses
  no_offset = dataclasses.replace(config, bert=dataclasses.replace(bert, position_offset=0))
  assert np.abs(encoder_lib.Encoder(no_offset, params, tokenizer).encode(texts) - want).max() > 1e-3


def test_xlmr_export_loads_back_in_transformers(xlmr_dir, tmp_path):
  import torch
  from transformers import AutoModel
  path, model = xlmr_dir
  enc = encoder_lib.load_encoder(path)
  out = str(tmp_path / "export")
  enc.save_pretrained(out)
  assert json.load(open(os.path.join(out, "config.json")))["model_type"] == "xlm-roberta"
  again, info = AutoModel.from_pretrained(out, output_loading_info=True)
  assert type(again).__name__ == "XLMRobertaModel"
  assert not info["missing_keys"] and not info["unexpected_keys"]
  ids = torch.tensor([[0, 4, 5, 2, 1]])
  mask = torch.tensor([[1, 1, 1, 1, 0]])
  with torch.no_grad():
    np.testing.assert_allclose(again(input_ids=ids, attention_mask=mask).last_hidden_state.numpy(),
                               model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy(), atol=1e-6)
