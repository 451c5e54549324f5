# Two commands on a fresh machine with only Python: `make quickstart` and `make test`.
# Both build .venv first (`make install`). torch is installed alone first so that pip takes the CPU
# wheel instead of pulling a multi-GB CUDA build as a dependency of sentence-transformers.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
EXTRAS ?= torch,test
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: install test quickstart bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $@

test: install
	$(BIN)/python -m pytest -q -n 2 --durations=15 tests

quickstart: install
	$(BIN)/python -m neuralir_jax.quickstart --workdir workdirs/quickstart

bench: install
	$(BIN)/python benchmarks/encode_throughput.py
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) workdirs
