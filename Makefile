# Two entry points (see README): `make demo` and `make test`. Both create the virtual environment on
# first use; later calls reuse it until pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.coreseg-installed

BUNDLE_RUN := $(BIN)/python -m monai.bundle run --meta_file configs/metadata.json --logging_file configs/logging.conf

.PHONY: setup demo demo-smoke demo-model test lint benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	@# PyPI has no CPU-only torchvision: the CUDA wheels are installed and run on CPU as well.
	$(PIP) install --quiet -c constraints.txt torch torchvision
	@# sam2 ships as an sdist; build it against the torch above and without its optional CUDA kernel.
	SAM2_BUILD_CUDA=0 $(PIP) install --quiet -c constraints.txt --no-build-isolation sam2
	$(PIP) install --quiet -c constraints.txt -e ".[dev]"
	touch $@

# The bundled synthetic-data demo model (models/) on the bundled sample images; writes eval/inference/.
demo: setup
	$(BUNDLE_RUN) --config_file configs/inference.json

# The untrained tiny preset on a generated phantom: a smoke run of the whole inference path.
demo-smoke: setup
	$(BIN)/python -m scripts.cli demo

# Retrain the demo model (about 3 h on one CPU core; docs/sft_learning.md): a box-prompt pretrained tiny SAM, the
# language model on the answers, the adapter and SAM on the held language model's own answers (generated once and
# cached as eval/train_sft_demo/own_answers.json), then one GRPO epoch (docs/grpo.md), whose model goes to
# models/model.pt.
demo-model: setup
	$(BIN)/python -c "from scripts.data.synthetic import ensure_benchmark; ensure_benchmark('data/synthetic_small', 'small', 0)"
	$(BIN)/python -m scripts.pretrain_sam --datalist data/synthetic_small/datalist.json --out models/tiny_sam2_256.pt
	$(BUNDLE_RUN) --config_file "['configs/train_sft.json','configs/train_sft_demo_text.json']"
	$(BUNDLE_RUN) --config_file "['configs/train_sft.json','configs/train_sft_demo.json']"
	$(BUNDLE_RUN) --config_file "['configs/train_grpo.json','configs/train_grpo_demo.json']"

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check scripts tests bundle

benchmark: setup
	$(BIN)/python -m scripts.benchmark --preset tiny

clean:
	rm -rf $(VENV) eval .pytest_cache
