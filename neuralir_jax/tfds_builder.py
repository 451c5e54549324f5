"""A TFDS builder over the bundled NLI files, so the `tfds:` source can be tested with no download.

`NeuralirNli` ("neuralir_nli") turns `data/nli/train_sample.jsonl.gz` (train) and `data/nli/snli_test.jsonl.gz`
(test) into an array_record dataset with the features of TFDS's own `snli`: `premise`, `hypothesis` (text) and
`label` (ClassLabel entailment/neutral/contradiction). Importing this module registers the builder; then

  builder = NeuralirNli(data_dir=tmp)      # or NeuralirNli(data_dir=tmp, nli_dir=dir_with_train_and_test)
  builder.download_and_prepare(file_format="array_record")
  load_records("tfds:neuralir_nli:train", "pairs", tfds_data_dir=tmp)

reads it back through `tfds.data_source`, with no TensorFlow installed.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from neuralir_jax import readers

DEFAULT_NLI_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "nli")
SPLIT_FILES = {"train": "train_sample.jsonl.gz", "test": "snli_test.jsonl.gz"}


class NeuralirNli(tfds.core.GeneratorBasedBuilder):
  """SNLI dev + MultiNLI dev-matched (train) and SNLI test (test), from the repository's data/nli."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Bundled NLI sample of neuralir_jax."}

  def __init__(self, *, nli_dir: str | None = None, **kwargs):
    self._nli_dir = nli_dir or DEFAULT_NLI_DIR
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "premise": tfds.features.Text(),
            "hypothesis": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=list(readers.NLI_LABELS)),
        }),
        supervised_keys=None,
        homepage="https://nlp.stanford.edu/projects/snli/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # The files are local.
    paths = {}
    for split, name in SPLIT_FILES.items():
      path = os.path.join(self._nli_dir, name)
      if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing; neuralir_nli needs {sorted(SPLIT_FILES.values())} "
                                "in nli_dir (the repository's data/nli).")
      paths[split] = path
    return {split: self._generate_examples(path) for split, path in paths.items()}

  def _generate_examples(self, path: str):
    for i, row in enumerate(readers.read_nli(path)):
      yield i, {"premise": row["premise"], "hypothesis": row["hypothesis"], "label": row["label"]}
