# Two entry points for a fresh machine with Python 3.11+: `make render` and `make test`.
PYTHON ?= python3
VENV ?= venv
PY := $(VENV)/bin/python
STACK ?= dev

.PHONY: render test lint typecheck unit clean

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
	CHECKOV=$(abspath $(SCAN_VENV))/bin/checkov $(PY) -m pytest

test: lint typecheck unit  ## everything CI runs

clean:
	rm -rf build $(VENV)
