# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv, install, run the main job on the embedded defaults
#   make test   - create .venv, install everything, run the whole test suite
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: venv demo test test-fast lint typecheck bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all]"
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vtr-qdrant demo

test: $(STAMP)
	@bash tests/serve/install_chromium.sh   # the browser test's system Chromium, when missing and installable
	$(PY) -m pytest -q -ra

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow and not ray and not export"

lint: $(STAMP)
	$(VENV)/bin/ruff check vtr_qdrant ray_jobs onnx_export tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
