"""Multi-process encoding: 2 processes (loopback coordinator) give what 1 process gives."""

import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_process_encode_equals_one_process(minilm_path, tmp_path):
  texts = [f"sentence number {i} about {'dogs' if i % 2 else 'the stock market'}" for i in range(37)]
  inp = tmp_path / "texts.txt"
  inp.write_text("\n".join(texts) + "\n")
  env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
  env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
  env.pop("JAX_NUM_CPU_DEVICES", None)
  cmd = [sys.executable, "-m", "neuralir_jax.cli", "encode", "--model", minilm_path, "--input", str(inp)]
  subprocess.run(cmd + ["--output", str(tmp_path / "one.npy")], env=env, check=True, cwd=REPO,
                 capture_output=True)
  proc = subprocess.run([os.path.join(REPO, "launch", "local_multiprocess.sh"), "2", "2", *cmd,
                         "--output", str(tmp_path / "two.npy")], env=env, cwd=REPO, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:]
  one, two = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
  assert one.shape == (37, 384)
  np.testing.assert_allclose(two, one, atol=1e-6)
