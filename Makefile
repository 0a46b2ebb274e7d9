# Two entry points (see README): `make demo` and `make test`. Both create the virtual environment on
# first use; later calls reuse it until pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.coreseg-installed

.PHONY: setup demo test lint benchmark clean

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

demo: setup
	$(BIN)/python -m scripts.cli demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check scripts tests

benchmark: setup
	$(BIN)/python -m scripts.benchmark --preset tiny

clean:
	rm -rf $(VENV) eval .pytest_cache
