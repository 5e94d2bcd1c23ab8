# vfq — two commands do all set-up: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,train]'
	touch $@

setup: $(STAMP)

## The main job: a phantom CT through the geometry core, report and pictures in $(OUT)/demo.
demo: $(STAMP)
	$(BIN)/python -m vfq.phantoms.demo --out $(OUT)/demo

## The test suite.
test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Speed checks (figures printed against their targets).
bench: $(STAMP)
	$(BIN)/python benchmarks/phantom_bench.py
	$(BIN)/python benchmarks/straighten_bench.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache .hypothesis
