# pixeltext: `make test` on a fresh clone installs everything it needs, then runs the suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# Keep bytecode caches in .venv: Beam's worker processes import it from scratch otherwise.
unexport PYTHONDONTWRITEBYTECODE

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# A CUDA user adds the matching PyTorch index, e.g. https://download.pytorch.org/whl/cu128
TORCH_INDEX_URL ?=
PIP_INSTALL := $(BIN)/python -m pip install --no-compile --disable-pip-version-check --progress-bar off \
	-c constraints.txt $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL))
INSTALLED := $(VENV)/.installed

# make render: CORPUS (paths or globs, default: the English Wikipedia sample), OUT, TEXT_FIELD,
# SHARD_SAMPLES, WORKERS, RUNNER (DirectRunner, DaskRunner, ...), DASK_ADDRESS (DaskRunner: a running
# cluster's scheduler; default a local cluster), and BEAM_ARGS passed to Beam as they are.
OUT ?= outputs/shards
# make demo: DEMO_BUDGET=full (about 25 minutes on 2 cores) or smoke (about a minute)
DEMO_BUDGET ?= full
DEMO_OUT ?= outputs/demo

.PHONY: help install ocr-engine test lint bench bench-gpu render demo lock clean

help:
	@echo "make install   virtual environment in $(VENV), both packages (editable), fonts and tokenizer"
	@echo "make demo      render, pre-train, fine-tune and score; a report in $(DEMO_OUT)/report"
	@echo "make test      the test suite (installs first)"
	@echo "make render    render CORPUS=... into OUT=$(OUT) (WebDataset shards, Apache Beam)"
	@echo "make bench     renderer, render job (vs PangoCairo, stages, awkward inputs, 200k documents), fine-tuning, training, generation"
	@echo "make bench-gpu the training step on one GPU (needs only PyTorch; BENCH_GPU_ARGS=...)"
	@echo "make lint      ruff"
	@echo "make lock      re-resolve dependencies into constraints.txt"

install: $(INSTALLED) ocr-engine
	@$(BIN)/pixeltext-render assets fetch

# The OCR engine that task=cloze reads a model's pixels with (Tesseract 5, Debian's package):
# installed when missing, as root with apt-get; otherwise the command to run is printed.
ocr-engine:
	@command -v tesseract >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing the OCR engine (apt-get install tesseract-ocr)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr >/dev/null; \
	  else \
	    echo "note: no OCR engine; task=cloze needs one: sudo apt-get install tesseract-ocr (or your system's tesseract)"; \
	  fi; }

$(INSTALLED): constraints.txt render/pyproject.toml train/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "pixeltext needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e 'render[job,dev]' -e 'train[dev]'
	touch $@

test: install
	$(BIN)/python -m pytest tests

lint: install
	$(BIN)/ruff check render train tests bench eval
	$(BIN)/ruff format --check render train tests bench eval

render: install
	$(BIN)/pixeltext-render run --out '$(OUT)' $(foreach c,$(CORPUS),--corpus '$(c)') \
		$(if $(TEXT_FIELD),--text-field '$(TEXT_FIELD)') $(if $(SHARD_SAMPLES),--shard-samples $(SHARD_SAMPLES)) \
		$(if $(WORKERS),--workers $(WORKERS)) $(if $(RUNNER),--runner $(RUNNER)) \
		$(if $(DASK_ADDRESS),--dask-address '$(DASK_ADDRESS)') $(BEAM_ARGS)

demo: install
	$(BIN)/python eval/demo.py --budget $(DEMO_BUDGET) --out '$(DEMO_OUT)'

bench: install
	$(BIN)/python bench/render_bench.py
	$(BIN)/python bench/job_bench.py
	$(BIN)/python bench/fuzz_bench.py
	$(BIN)/python bench/scale_bench.py
	$(BIN)/python bench/finetune_bench.py
	$(BIN)/python bench/train_bench.py
	$(BIN)/python bench/generate_bench.py

# Runs with whatever Python has PyTorch (a GPU machine's own), no install: the model code only.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
bench-gpu:
	PYTHONPATH=train/src $(GPU_PYTHON) bench/gpu_bench.py $(BENCH_GPU_ARGS)

lock:
	rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install --no-compile -q -e 'render[job,dev]' -e 'train[dev]'
	{ sed -n '1,/^[a-zA-Z]/{/^#/p}' constraints.txt; \
	  $(VENV)-lock/bin/pip freeze --exclude-editable | sed 's/+[a-z0-9.]*$$//'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf $(VENV)-lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
