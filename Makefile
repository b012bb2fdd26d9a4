# Every target bootstraps its own virtual environment from a bare python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest --cov=beacon_otel --cov-branch --cov-report=term-missing:skip-covered $(PYTEST_ARGS)

lint: $(STAMP)  # ruff over everything, mypy strict over src/
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples
	$(BIN)/mypy --strict src

# Benchmarks against the alternatives, written to bench/RESULTS.md (about 8 minutes; BENCH_QUICK=1
# for a short trial). The comparison packages are benchmark-only, so they are installed here.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet beaconhq==0.2.0 peekapi==0.1.0
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .coverage build dist
