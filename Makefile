# vfq — two commands do all set-up: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: setup demo test lint bench train weights evaluate clean

# The embedded Triton (the tritonserver binary of the nvidia-pytriton wheel) runs the python steps with
# this venv's interpreter; its python-backend stub needs the shared libpython of that Python version
# (Debian: libpython3.11). The wheel is installed without its own dependency pins (DESIGN §3).
PYTRITON := nvidia-pytriton==0.7.0
PIP := $(BIN)/pip --quiet --disable-pip-version-check
# The real Helm engine for the chart's tests (Python bindings; the wheel says Python >= 3.12 but
# loads on 3.11).
HELM_SDKPY := helm-sdkpy==0.1.32

# System packages: libpython3.11 (the embedded Triton's python-backend stub), libtcmalloc-minimal4
# (the allocator the embedded Triton preloads, vfq/server/embedded.py) and dicom3tools (dciodvfy,
# the DICOM validator the SR tests run).
SYSTEM_PACKAGES := libpython3.11 libtcmalloc-minimal4 dicom3tools
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml constraints.txt
	@if ! ldconfig -p | grep -q 'libpython3.11.so.1.0' || ! ldconfig -p | grep -q 'libtcmalloc_minimal.so.4' \
	    || ! command -v dciodvfy >/dev/null; then \
	  echo "installing the system packages $(SYSTEM_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(SYSTEM_PACKAGES); fi
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[server,openvino,dev,train]'
	$(PIP) install --no-deps $(PYTRITON)
	$(PIP) install --ignore-requires-python $(HELM_SDKPY)
	touch $@

setup: $(STAMP)

## The main job: start the embedded Triton, analyse a phantom with fractures (DICOM) and a real CT
## over gRPC, write report.json + overlay.png per study in $(OUT)/demo/results, print the tables.
demo: $(STAMP)
	$(BIN)/vfq demo --out $(OUT)/demo

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
	$(BIN)/python benchmarks/serving_bench.py --out $(OUT)/bench --compare benchmarks/results/latest.json

## Train both networks on phantoms, as the shipped weights were trained (54 min of training and
## about 15 min of sample rendering on 2 cores); then `make weights` exports and checks them.
TRAIN := $(OUT)/train
train: $(STAMP)
	$(BIN)/vfq-cache localizer $(OUT)/cache/localizer --seeds 0:400
	$(BIN)/vfq-cache detector $(OUT)/cache/detector --seeds 0:300
	$(BIN)/vfq-cache detector $(OUT)/cache/detector --seeds 300:500 --fracture-probability 0.95
	$(BIN)/vfq-train localizer --cache $(OUT)/cache/localizer --out $(TRAIN)/localizer --minutes 20 --batch-size 4 --seed 2
	$(BIN)/vfq-train detector --cache $(OUT)/cache/detector --out $(TRAIN)/detector --minutes 34 --batch-size 8

weights: $(STAMP)
	$(BIN)/vfq-export --localizer $(TRAIN)/localizer/model.pt --detector $(TRAIN)/detector/model.pt --out export/weights

## The offline evaluation: 100 held-out phantoms and the real scans of tests/data/real.
evaluate: $(STAMP)
	$(BIN)/vfq-evaluate --weights export/weights --out $(OUT)/eval \
		--real tests/data/real/lumbar_ct_3mm/ct.nii.gz tests/data/real/thoracolumbar_dicom_20slices

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache .hypothesis
