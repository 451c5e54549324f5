"""`neuralir` user errors are one line `neuralir: error: ...` with exit status 2 and no traceback.

One table of bad config keys, bad config files and bad CLI inputs, each run through `cli.main()` in this
process; then the positive cases next to them (a stray "\\r" inside a line, exporting into our own
directory, --overwrite). Nothing here trains: config errors stop before any data is read.
"""

import json
import os
import shutil
import sys

import numpy as np
import pytest

from neuralir_jax import cli, config_lib, hf_io
from tests.train_helpers import save_tiny_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")


def _train(*overrides):
  return ["train", "--config", TINY, "--workdir", "{tmp}/w", *overrides]


# (argv with {placeholders} from _inputs, text the error line must contain)
CASES = {
    # Config keys (configs/tiny.py: batch_size 16 on 8 devices, random init with 512 positions).
    "log_every_steps": (_train("--config.log_every_steps=0"), "log_every_steps=0: must be >= 1"),
    "checkpoint_every": (_train("--config.checkpoint.every_steps=0"), "checkpoint.every_steps=0"),
    "checkpoint_keep": (_train("--config.checkpoint.keep=0"), "checkpoint.keep=0: keep 0 would delete"),
    "num_steps": (_train("--config.num_steps=0"), "num_steps=0"),
    "temperature": (_train("--config.infonce.temperature=0"), "infonce.temperature=0.0: must be > 0"),
    "dropout": (_train("--config.model.dropout_rate=1.0"), "model.dropout_rate=1.0: must be >= 0 and < 1"),
    "batch_not_int": (_train("--config.batch_size=abc"), "--config.batch_size=abc: cannot parse as int"),
    "batch_float": (_train("--config.batch_size=12.5"), "--config.batch_size=12.5: expected an integer"),
    "batch_devices": (_train("--config.batch_size=12"), "batch_size=12: not divisible by the 8 devices"),
    "unknown_key": (_train("--config.optimizer.learning_rat=0.1"),
                    "unknown config key 'optimizer.learning_rat' in {tiny}: optimizer has keys ["),
    "max_length": (_train("--config.data.max_length=1000"), "data.max_length=1000: the model has 512 position"),
    "chunk_size": (_train("--config.grad_cache.chunk_size=3"), "grad_cache.chunk_size=3: examples per device"),
    "strategy": (_train("--config.parallel.strategy=dp"), "parallel.strategy='dp': use one of pjit, pmap"),
    "fsdp_pmap": (_train("--config.parallel.strategy=pmap", "--config.parallel.fsdp=true"),
                  "parallel.fsdp=True needs parallel.strategy='pjit'"),
    "negatives": (_train("--config.negatives=both"), "negatives='both'"),
    "dtype": (_train("--config.model.dtype=float16"), "model.dtype='float16'"),
    "view": (_train("--config.data.view=columns"), "data.view='columns'"),
    "no_objective": (_train("--config.objectives.nli_softmax=0", "--config.objectives.infonce=0"),
                     "objectives: every weight is 0"),
    "negative_weight": (_train("--config.objectives.triplet=-1"), "objectives.triplet=-1.0"),
    "ce_on_bi_encoder": (_train("--config.objectives.ce_listwise=1"), "train a cross-encoder: set --config.model.family"),
    "bi_objective_on_ce": (_train("--config.model.family=cross_encoder", "--config.objectives.ce_listwise=1"),
                           "trains objectives.ce_* only; set the weights of ['infonce', 'nli_softmax'] to 0"),
    "ce_packing": (_train("--config.model.family=cross_encoder", "--config.objectives.nli_softmax=0",
                          "--config.objectives.infonce=0", "--config.objectives.ce_pairwise=1"),
                   "data.packing=True: cross-encoders train on padded"),
    "embedding_mse_teacher": (_train("--config.objectives.embedding_mse=1"),
                              "distill.teacher='': objectives.embedding_mse needs a teacher"),
    "layers_random": (_train("--config.model.layers=(0,2)"), "model.layers=(0, 2): selects layers of a pretrained"),
    "b2": (_train("--config.optimizer.b2=1"), "optimizer.b2=1.0"),
    "colbert_document_length": (["train", "--config", "configs/colbert_scifact.py", "--workdir", "{tmp}/w",
                                 "--config.colbert.document_length=1000"],
                                "colbert.document_length=1000: the model has 512 position embeddings"),
    "bool": (_train("--config.parallel.fsdp=maybe"), "--config.parallel.fsdp=maybe: cannot parse as bool"),
    # Config files.
    "config_missing": (["train", "--config", "{tmp}/nope.py", "--workdir", "{tmp}/w"], "config file {tmp}/nope.py"),
    "config_syntax": (["train", "--config", "{syntax}", "--workdir", "{tmp}/w"], "{syntax}:3: syntax error"),
    "config_no_get_config": (["train", "--config", "{no_get_config}", "--workdir", "{tmp}/w"],
                             "{no_get_config} defines no get_config"),
    "config_old_import": (["train", "--config", "{old_import}", "--workdir", "{tmp}/w"],
                          "{old_import}: No module named 'common'"),
    "config_variant": (["ablate", "--config", "{ablation}:huge", "--workdir", "{tmp}/w"], "unknown variant"),
    # CLI verbs.
    "eval_bad_model": (["eval", "--model", "{tmp}/nope", "--task", "sts:x.tsv"], "--model {tmp}/nope: no such"),
    "encode_bad_model": (["encode", "--model", "{tmp}/nope", "--input", "{texts}", "--output", "{tmp}/e.npy"],
                         "--model {tmp}/nope: no such"),
    "export_bad_model": (["export", "--model", "{tmp}/nope", "--output", "{tmp}/out"], "--model {tmp}/nope: no such"),
    "export_not_workdir": (["export", "--workdir", "{tmp}", "--output", "{tmp}/out"], "no checkpoints/ folder"),
    "eval_output_dir": (["eval", "--model", "minilm", "--task", "sts:x.tsv", "--output", "{tmp}"],
                        "--output {tmp}: is a directory"),
    "encode_output_dir": (["encode", "--model", "minilm", "--input", "{texts}", "--output", "{tmp}"],
                          "--output {tmp}: is a directory"),
    "encode_output_no_parent": (["encode", "--model", "minilm", "--input", "{texts}", "--output", "{tmp}/a/b.npy"],
                                "does not exist"),
    "export_output_file": (["export", "--model", "minilm", "--output", "{texts}"], "{texts}: is a file"),
    "export_foreign_dir": (["export", "--model", "minilm", "--output", "{foreign}"],
                           "{foreign}: not empty and not a previous export"),
    "encode_not_utf8": (["encode", "--model", "minilm", "--input", "{latin1}", "--output", "{tmp}/e.npy"],
                        "{latin1}:2: not valid UTF-8 (byte 0xe9"),
    "encode_no_input": (["encode", "--model", "minilm", "--input", "{tmp}/none.txt", "--output", "{tmp}/e.npy"],
                        "{tmp}/none.txt: no such input file"),
    "truncated_weights": (["encode", "--model", "{truncated}", "--input", "{texts}", "--output", "{tmp}/e.npy"],
                          "{truncated}/model.safetensors: cannot be read as safetensors"),
    "corrupt_tokenizer": (["encode", "--model", "{bad_tokenizer}", "--input", "{texts}", "--output", "{tmp}/e.npy"],
                          "{bad_tokenizer}/tokenizer.json: cannot be read as a fast tokenizer"),
    "override_on_eval": (["eval", "--model", "minilm", "--task", "sts:x.tsv", "--config.seed=1"],
                         "overrides apply to train and ablate"),
}


def _inputs(tmp, minilm_path) -> dict[str, str]:
  """The files the table's rows name, all tiny."""
  (tmp / "texts.txt").write_text("one\ntwo\n")
  (tmp / "latin1.txt").write_bytes("fine\ncaf\xe9\n".encode("latin-1"))
  (tmp / "syntax.py").write_text("import ml_collections\n\ndef get_config(arg=None)\n  return None\n")
  (tmp / "no_get_config.py").write_text("CONFIG = {}\n")
  (tmp / "old_import.py").write_text("import common\n\ndef get_config(arg=None):\n  return common.base_config()\n")
  (tmp / "foreign").mkdir()
  (tmp / "foreign" / "notes.txt").write_text("not an export")
  weights = os.path.join(minilm_path, "model.safetensors")
  for name in ("truncated", "bad_tokenizer"):  # MiniLM copies with one broken file each.
    d = tmp / name
    d.mkdir()
    for f in os.listdir(minilm_path):
      src = os.path.join(minilm_path, f)
      if os.path.isdir(src):
        shutil.copytree(src, d / f)
      elif f != "model.safetensors":
        shutil.copyfile(src, d / f)
  with open(weights, "rb") as f:
    (tmp / "truncated" / "model.safetensors").write_bytes(f.read(4096))  # The header and a little more.
  os.symlink(weights, tmp / "bad_tokenizer" / "model.safetensors")
  (tmp / "bad_tokenizer" / "tokenizer.json").write_text('{"version": "1.0", "model": ')
  names = ["texts", "latin1", "syntax", "no_get_config", "old_import"]
  paths = {n: str(next(tmp.glob(n + ".*"))) for n in names}
  return dict(paths, tmp=str(tmp), tiny=TINY, ablation=os.path.join(ROOT, "configs", "ablation_negatives.py"),
              foreign=str(tmp / "foreign"), truncated=str(tmp / "truncated"),
              bad_tokenizer=str(tmp / "bad_tokenizer"))


def _main(monkeypatch, argv: list[str]) -> int:
  monkeypatch.setattr(sys, "argv", ["neuralir", *argv])
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"))  # Restored after.
  monkeypatch.delenv("NEURALIR_DEBUG", raising=False)
  with pytest.raises(SystemExit) as e:
    cli.main()
  return e.value.code


@pytest.mark.parametrize("argv, expected", CASES.values(), ids=CASES.keys())
def test_user_error_is_one_line_with_status_2(argv, expected, tmp_path, minilm_path, monkeypatch, capsys):
  values = _inputs(tmp_path, minilm_path)
  code = _main(monkeypatch, [a.format(**values) for a in argv])
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if line.strip()]
  assert code == 2, err
  assert "Traceback" not in err
  assert lines[-1].startswith("neuralir: error: "), err
  assert expected.format(**values) in lines[-1]


def test_config_errors_do_not_change_the_config():
  config = config_lib.load_config(TINY)
  before = config.to_dict()
  with pytest.raises(KeyError):
    config_lib.apply_overrides(config, ["--config.batch_size=32", "--config.nope=1"], TINY)
  changed = config_lib.apply_overrides(config, ["--config.batch_size=32"], TINY)
  assert changed.batch_size == 32 and changed.is_locked and config.to_dict() == before
  config_lib.validate(changed, num_devices=8, max_positions=512)
  assert config.to_dict() == before
  with pytest.raises(AttributeError, match="learning_rat"):  # Locked: a typo in code raises too.
    config.optimizer.learning_rat = 1.0


def test_interrupt_debug_and_nan(monkeypatch, capsys):
  def interrupted(argv):
    raise KeyboardInterrupt

  monkeypatch.setattr(cli, "run", interrupted)
  assert _main(monkeypatch, ["eval"]) == 130
  assert capsys.readouterr().err.strip() == "neuralir: interrupted"

  def bad(argv):
    raise ValueError("first line\nsecond line")

  monkeypatch.setattr(cli, "run", bad)
  assert _main(monkeypatch, ["eval"]) == 2
  assert capsys.readouterr().err.strip() == "neuralir: error: first line"
  monkeypatch.setattr(sys, "argv", ["neuralir", "eval"])
  monkeypatch.setenv("NEURALIR_DEBUG", "1")
  with pytest.raises(ValueError, match="first line"):
    cli.main()
  # Metrics JSON never holds a bare NaN (an undefined correlation): it becomes null.
  metrics = {"spearman": float("nan"), "pearson": np.float32(0.5), "n": np.int64(2)}
  assert json.loads(json.dumps(cli.json_safe(metrics), allow_nan=False)) == {"spearman": None, "pearson": 0.5, "n": 2}


def test_encode_keeps_one_row_per_line(tmp_path, monkeypatch, capsys):
  texts = tmp_path / "texts.txt"
  # A BOM, a stray "\r" inside the first line, a CRLF ending and no final newline: 3 lines.
  texts.write_bytes(b"\xef\xbb\xbfone\rstill the first line\r\nsecond\nthird")
  out = tmp_path / "emb"  # No .npy: written as given.
  assert _main(monkeypatch, ["encode", "--model", "minilm", "--input", str(texts), "--output", str(out)]) == 0
  assert f"wrote {out}: 3 x 384" in capsys.readouterr().out
  assert not os.path.exists(f"{out}.npy")
  emb = np.load(out)
  assert emb.shape == (3, 384) and emb.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


@pytest.fixture
def small_model(tmp_path, minilm_path) -> str:
  """A 1-layer, hidden-32 random encoder with MiniLM's tokenizer: quick to load and export."""
  return save_tiny_encoder(str(tmp_path / "small"), minilm_path)


def test_export_twice_into_our_directory_and_overwrite(small_model, tmp_path, monkeypatch, capsys):
  out = tmp_path / "export"
  for _ in range(2):  # The second export finds its own marker and replaces the first.
    assert _main(monkeypatch, ["export", "--model", small_model, "--output", str(out)]) == 0
  marker = json.loads((out / hf_io.EXPORT_MARKER).read_text())
  assert marker["source"] == small_model and marker["step"] is None
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("keep")
  assert _main(monkeypatch, ["export", "--model", small_model, "--output", str(foreign), "--overwrite"]) == 0
  assert (foreign / "notes.txt").read_text() == "keep" and (foreign / "model.safetensors").is_file()
  capsys.readouterr()
