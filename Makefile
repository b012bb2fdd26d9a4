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

# The dashboard test drives Debian's chromium (never a downloaded browser): installed here when
# missing and we are root, as on CI's fresh machine; elsewhere that test says what to install.
CHROMIUM := /usr/bin/chromium

test: $(STAMP)
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi
	$(BIN)/python -m pytest --cov=beacon_otel --cov-branch --cov-report=term-missing:skip-covered $(PYTEST_ARGS)

lint: $(STAMP)  # ruff over everything, mypy strict over src/, the package's layers (pyproject)
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples
	$(BIN)/mypy --strict src
	$(BIN)/lint-imports

# Benchmarks against the alternatives: figures in bench/results.json, tables rendered into
# bench/RESULTS.md (whose commentary section is kept). About 30 minutes (20 of them the real servers) on a quiet 2-core machine;
# BENCH_QUICK=1 for a short trial. Instruction counts need valgrind and cc (Debian packages);
# BENCH_INSTRUCTIONS=0 skips them. The comparison packages are benchmark-only, installed here.
# The real-server section drives uvicorn and gunicorn with Debian's wrk, installed here when missing
# and we are root; elsewhere that section says what to install and is skipped.
bench: $(STAMP)
	@if ! command -v wrk >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk; \
	fi
	$(BIN)/python -m pip install --quiet beaconhq==0.2.0
	@# Apitally 1.0 pulls in opentelemetry-instrumentation-logging, which opentelemetry-instrument would then
	@# load into every process (the tests' too): it goes to a folder of its own, on the path of its variant only.
	$(BIN)/python -m pip install --quiet --no-deps --upgrade --target $(VENV)/apitally apitally==1.0.0 psutil \
		opentelemetry-instrumentation-logging==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-instrumentation"))')
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .coverage build dist
