# vfq — two commands do all set-up: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: setup demo test lint bench train weights evaluate clean

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

## Train both networks on phantoms, as the shipped weights were trained (54 min of training and
## about 15 min of sample rendering on 2 cores); then `make weights` exports and checks them.
TRAIN := $(OUT)/train
train: $(STAMP)
	$(BIN)/vfq-cache localizer $(OUT)/cache/localizer --seeds 0:400
	$(BIN)/vfq-cache detector $(OUT)/cache/detector --seeds 0:300
	$(BIN)/vfq-train localizer --cache $(OUT)/cache/localizer --out $(TRAIN)/localizer --minutes 20 --batch-size 4
	$(BIN)/vfq-train detector --cache $(OUT)/cache/detector --out $(TRAIN)/detector --minutes 22 --batch-size 8
	$(BIN)/vfq-cache detector $(OUT)/cache/detector --seeds 300:500 --fracture-probability 0.95
	$(BIN)/vfq-train detector --cache $(OUT)/cache/detector --out $(TRAIN)/detector --minutes 34 --batch-size 8

weights: $(STAMP)
	$(BIN)/vfq-export --localizer $(TRAIN)/localizer/model.pt --detector $(TRAIN)/detector/model.pt --out export/weights

## The offline evaluation: 100 held-out phantoms and the real scans of tests/data/real.
evaluate: $(STAMP)
	$(BIN)/vfq-evaluate --weights export/weights --out $(OUT)/eval \
		--real tests/data/real/lumbar_ct_3mm/ct.nii.gz tests/data/real/thoracolumbar_dicom_20slices

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache .hypothesis
