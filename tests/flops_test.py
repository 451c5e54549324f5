"""Model FLOPs and MFU against hand-computed values."""

import dataclasses

import jax
import numpy as np

from neuralir_jax import flops
from neuralir_jax.model import BertConfig, EncoderConfig, count_params, init_params

BERT_BASE = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       intermediate_size=3072)


def test_nonembedding_params_bert_base_and_real_tree():
  assert flops.nonembedding_params(BERT_BASE) == 85_056_000  # 12 * 7,087,872 + 1,536.
  tiny = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64)
  params = init_params(EncoderConfig(tiny), jax.random.PRNGKey(0))
  pooler = 32 * 32 + 32  # Created for export, unused by the sentence encoder.
  assert flops.nonembedding_params(tiny) == count_params(params, exclude_embeddings=True) - pooler


def test_train_flops_bert_base_hand_computed():
  # 6 * 85,056,000 * 128 = 65,323,008,000; 12 * 12 * 128^2 * 768 = 1,811,939,328.
  assert flops.flops_per_sequence(BERT_BASE, 128) == 67_134_947_328
  # Batch 512, triplets (3 sequences of 128), one hard negative: 1,024 candidates per query.
  logits = 6 * 512 * 1024 * 768
  assert logits == 2_415_919_104
  total = flops.train_flops_per_step(BERT_BASE, [128, 128, 128], 512, candidates_per_query=1024)
  assert total == 512 * 3 * 67_134_947_328 + 2_415_919_104
  sym = flops.train_flops_per_step(BERT_BASE, [128, 128], 512, 1024, symmetric_candidates=512)
  assert sym == 512 * 2 * 67_134_947_328 + 6 * 512 * 1536 * 768


@dataclasses.dataclass
class FakeDevice:
  platform: str
  device_kind: str


def test_peak_flops_and_mfu():
  assert flops.peak_flops_per_device(FakeDevice("gpu", "NVIDIA H100 80GB HBM3")) == 989e12
  assert flops.peak_flops_per_device(FakeDevice("gpu", "NVIDIA H200")) == 989e12
  assert flops.peak_flops_per_device(FakeDevice("gpu", "NVIDIA A100-SXM4-40GB")) == 312e12
  assert flops.peak_flops_per_device(FakeDevice("tpu", "TPU v4")) == 275e12
  assert flops.peak_flops_per_device(FakeDevice("tpu", "TPU v5 lite")) == 197e12
  assert flops.peak_flops_per_device(FakeDevice("tpu", "TPU v5p")) == 459e12
  assert flops.peak_flops_per_device(FakeDevice("cpu", "cpu")) is None
  assert flops.peak_flops_per_device(FakeDevice("cpu", "cpu"), cpu_peak=1e11) == 1e11
  np.testing.assert_allclose(flops.mfu(1e15, 1.0, 8, 989e12), 1e15 / (8 * 989e12))
  assert flops.mfu(1e15, 1.0, 8, None) is None
