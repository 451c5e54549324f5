"""hf_io: Flax == PyTorch BertModel on MiniLM; .bin and prefixed checkpoints; clear errors on bad dirs."""

import json
import os
import pickle
import shutil

import jax
import numpy as np
import pytest

from neuralir_jax import hf_io
from neuralir_jax import model as model_lib
from neuralir_jax import tokenization

SENTENCES = [
    "Hi",
    "",
    "A man is playing a guitar on a small stage while the crowd claps along.",
    "Ünïcödé text: café, naïve, 東京タワー, Ελληνικά, emoji 🙂!",
    "What?!... (yes) -- \"quoted\" [brackets] {braces} #hashtag @user 3.14%",
    "The quick brown fox jumps over the lazy dog. " * 60,  # ~600 tokens: past max_seq_length and 512.
]


@pytest.fixture(scope="module")
def minilm(minilm_path):
  return hf_io.load_hf_directory(minilm_path)


def test_reads_sentence_transformers_settings(minilm):
  config, params, tokenizer = minilm
  assert config.pooling == "mean" and config.normalize and config.max_seq_length == 256
  assert config.bert.num_hidden_layers == 6 and config.bert.hidden_size == 384
  assert tokenizer.max_length == 256
  assert params["bert"]["layer_0"]["query"]["kernel"].shape == (384, 384)
  assert params["bert"]["layer_0"]["intermediate"]["kernel"].shape == (384, 1536)
  assert params["bert"]["embeddings_layer_norm"]["scale"].dtype == np.float32


def test_last_hidden_state_matches_torch_bert(minilm, minilm_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config, params, tokenizer = minilm
  ids, mask = tokenizer(SENTENCES, max_length=512, pad_to=512)  # The long text is cut at 512 tokens.
  assert mask.sum(1)[-1] == 512 and mask.sum(1)[1] == 2  # Truncated; empty text is [CLS] [SEP].
  module = model_lib.SentenceEncoder(config)
  ours = np.asarray(jax.jit(lambda p, i, m: module.apply({"params": p}, i, m, method="hidden_states"))(
      params, ids, mask))
  hf = transformers.BertModel.from_pretrained(minilm_path).eval()
  with torch.no_grad():
    theirs = hf(input_ids=torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
  valid = mask.astype(bool)
  diff = np.abs(ours[valid] - theirs[valid]).max()
  assert diff <= 1e-4, diff
  assert np.abs(theirs[valid]).max() > 1.0  # Not trivially small activations.


def _small_encoder(layers=2, pooling="mean", normalize=False, seed=0):
  bert = model_lib.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers,
                              num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
  config = model_lib.EncoderConfig(bert=bert, pooling=pooling, normalize=normalize, max_seq_length=64)
  params = jax.device_get(model_lib.init_params(config, jax.random.key(seed)))
  return config, params


@pytest.fixture
def small_dir(tmp_path, minilm_path):
  """A saved 2-layer random encoder with MiniLM's tokenizer; returns (dir, config, params)."""
  config, params = _small_encoder()
  out = str(tmp_path / "small")
  hf_io.save_hf_directory(out, config, params, tokenization.Tokenizer(minilm_path, 64))
  return out, config, params


def _assert_trees_equal(a, b):
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_save_load_round_trip_is_exact(small_dir):
  out, config, params = small_dir
  config2, params2, tokenizer = hf_io.load_hf_directory(out)
  assert config2 == config
  _assert_trees_equal(params2, params)
  assert tokenizer.max_length == 64
  for name in ("config.json", "model.safetensors", "tokenizer.json", "modules.json", "README.md",
               "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json"):
    assert os.path.isfile(os.path.join(out, name)), name
  assert not os.path.exists(os.path.join(out, "2_Normalize"))  # normalize=False.


def test_pytorch_bin_with_bert_prefix_and_heads(small_dir):
  torch = pytest.importorskip("torch")
  from safetensors.numpy import load_file
  out, _, params = small_dir
  weights = load_file(os.path.join(out, "model.safetensors"))
  state = {f"bert.{k}": torch.from_numpy(v) for k, v in weights.items()}
  state["bert.embeddings.position_ids"] = torch.arange(128)[None]
  state["cls.predictions.bias"] = torch.zeros(30522)  # A pre-training head: ignored.
  os.remove(os.path.join(out, "model.safetensors"))
  torch.save(state, os.path.join(out, "pytorch_model.bin"))
  _, params2, _ = hf_io.load_hf_directory(out)
  _assert_trees_equal(params2, params)


class _Exploit:
  def __reduce__(self):
    return (open, ("/tmp/neuralir_hf_io_test_pwned", "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pytorch_bin_is_never_unpickled(small_dir):
  out, _, _ = small_dir
  os.remove(os.path.join(out, "model.safetensors"))
  with open(os.path.join(out, "pytorch_model.bin"), "wb") as f:
    pickle.dump({"embeddings.word_embeddings.weight": _Exploit()}, f)
  with pytest.raises(hf_io.ModelDirectoryError, match=r"pytorch_model\.bin.*weights_only=True"):
    hf_io.load_hf_directory(out)
  assert not os.path.exists("/tmp/neuralir_hf_io_test_pwned")


def test_no_weights_lists_files_looked_for(small_dir):
  out, _, _ = small_dir
  os.remove(os.path.join(out, "model.safetensors"))
  with pytest.raises(hf_io.ModelDirectoryError) as e:
    hf_io.load_hf_directory(out)
  msg = str(e.value)
  assert "no weights" in msg and "model.safetensors" in msg and "pytorch_model.bin" in msg
  assert "\n" not in msg


def test_unsupported_model_type_names_supported_ones(small_dir):
  out, _, _ = small_dir
  file = os.path.join(out, "config.json")
  with open(file) as f:
    hf = json.load(f)
  with open(file, "w") as f:
    json.dump({**hf, "model_type": "deberta-v2"}, f)
  with pytest.raises(hf_io.ModelDirectoryError, match=r"config\.json: model_type='deberta-v2'.*supported.*bert"):
    hf_io.load_hf_directory(out)


def test_missing_config_names_the_file(tmp_path):
  with pytest.raises(hf_io.ModelDirectoryError, match=r"config\.json: not found"):
    hf_io.load_hf_directory(str(tmp_path))


def test_shape_mismatch_lists_every_key(small_dir):
  from safetensors.numpy import load_file, save_file
  out, _, _ = small_dir
  file = os.path.join(out, "model.safetensors")
  state = load_file(file)
  state["encoder.layer.1.attention.self.query.weight"] = np.zeros((32, 16), np.float32)
  state["embeddings.word_embeddings.weight"] = np.zeros((100, 32), np.float32)
  save_file(state, file, metadata={"format": "pt"})
  with pytest.raises(hf_io.ModelDirectoryError) as e:
    hf_io.load_hf_directory(out)
  msg = str(e.value)
  assert "encoder.layer.1.attention.self.query.weight: expected (32, 32), got (32, 16)" in msg
  assert "embeddings.word_embeddings.weight: expected (30522, 32), got (100, 32)" in msg


def test_missing_keys_are_listed_and_pooler_is_optional(small_dir):
  from safetensors.numpy import load_file, save_file
  out, _, params = small_dir
  file = os.path.join(out, "model.safetensors")
  state = load_file(file)
  del state["pooler.dense.weight"], state["pooler.dense.bias"]
  save_file(state, file, metadata={"format": "pt"})
  _, params2, _ = hf_io.load_hf_directory(out)  # Pooler re-initialised: unused by sentence encoders.
  assert params2["bert"]["pooler"]["kernel"].shape == (32, 32)
  _assert_trees_equal(params2["bert"]["layer_1"], params["bert"]["layer_1"])
  del state["encoder.layer.0.output.dense.bias"]
  save_file(state, file, metadata={"format": "pt"})
  with pytest.raises(hf_io.ModelDirectoryError, match=r"missing keys encoder\.layer\.0\.output\.dense\.bias"):
    hf_io.load_hf_directory(out)


def test_pooling_and_max_length_rules(small_dir):
  out, _, _ = small_dir
  pool_file = os.path.join(out, "1_Pooling", "config.json")
  with open(pool_file, "w") as f:
    json.dump({"embedding_dimension": 32, "pooling_mode": "cls"}, f)  # sentence-transformers 6.x format.
  assert hf_io.read_pooling(out) == ("cls", False)
  with open(pool_file, "w") as f:
    json.dump({"word_embedding_dimension": 32, "pooling_mode_mean_sqrt_len_tokens": True}, f)
  with pytest.raises(hf_io.ModelDirectoryError, match=r"1_Pooling/config\.json: pooling"):
    hf_io.read_pooling(out)
  # A plain HF directory (no sentence-transformers files): mean pooling, no normalisation, 512 capped.
  for name in ("modules.json", "sentence_bert_config.json"):
    os.remove(os.path.join(out, name))
  shutil.rmtree(os.path.join(out, "1_Pooling"))
  config, _, _ = hf_io.load_hf_directory(out)
  assert (config.pooling, config.normalize) == ("mean", False)
  assert config.max_seq_length == 128  # tokenizer_config says 512; max_position_embeddings is 128.


def test_truncated_safetensors_is_one_line_naming_the_file(small_dir):
  out, _, _ = small_dir
  file = os.path.join(out, "model.safetensors")
  with open(file, "r+b") as f:
    f.truncate(os.path.getsize(file) // 2)
  with pytest.raises(hf_io.ModelDirectoryError) as e:
    hf_io.load_hf_directory(out)
  assert str(e.value).startswith(f"{file}: cannot be read as safetensors") and "\n" not in str(e.value)


def test_export_refuses_foreign_directories_and_files(small_dir, tmp_path, minilm_path):
  out, config, params = small_dir
  tokenizer = tokenization.Tokenizer(minilm_path, 64)
  with open(os.path.join(out, hf_io.EXPORT_MARKER)) as f:
    assert json.load(f)["source"] is None
  hf_io.save_hf_directory(out, config, params, tokenizer, source="w", step=3)  # Our own export: replaced.
  with open(os.path.join(out, hf_io.EXPORT_MARKER)) as f:
    assert json.load(f)["step"] == 3
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("keep me")
  with pytest.raises(FileExistsError, match=r"foreign: not empty and not a previous export"):
    hf_io.save_hf_directory(str(foreign), config, params, tokenizer)
  assert sorted(os.listdir(foreign)) == ["notes.txt"]
  hf_io.save_hf_directory(str(foreign), config, params, tokenizer, overwrite=True)
  assert (foreign / "notes.txt").read_text() == "keep me" and (foreign / "model.safetensors").is_file()
  with pytest.raises(NotADirectoryError, match=r"notes\.txt: is a file"):
    hf_io.save_hf_directory(str(foreign / "notes.txt"), config, params, tokenizer)
