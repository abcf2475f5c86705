# Set-up and entry points. `make demo` and `make test` each create .venv on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/runtime.txt requirements/dev.txt requirements/no-deps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: the pinned CPU wheel lies on local disk; anything else pulls a CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -r requirements/runtime.txt -r requirements/dev.txt
	# Packages whose declared requirements are wrong for Python 3.11 / this torch (see docs/install.md).
	$(PIP) install --no-deps --ignore-requires-python -r requirements/no-deps.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nalln demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check nalln tests benchmarks
	$(BIN)/ruff format --check nalln tests benchmarks

bench: $(STAMP)
	$(PIP) install --no-deps -r requirements/bench.txt
	$(BIN)/python benchmarks/bench_speed.py

clean:
	rm -rf $(VENV) build *.egg-info
