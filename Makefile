# The two commands a newcomer needs:
#   make demo   set up .venv and run the whole pipeline on the embedded broker
#   make test   set up .venv and run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit integration bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/streamml demo $(ARGS)

test: $(STAMP) lint
	@# tests/e2e drives Debian's headless Chromium (the monitor's dashboard): install it when absent.
	command -v chromium >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	$(BIN)/python -m pytest $(ARGS)

# Lint and type-check: part of `make test`, so CI runs them on every submission.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(ARGS)

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(ARGS)
	$(BIN)/python -m benchmarks.latency
	$(BIN)/python -m benchmarks.serving_load
	$(BIN)/python -m benchmarks.processor_throughput
	$(BIN)/python -m benchmarks.scaleout
	$(BIN)/python -m benchmarks.producer_throughput
	$(BIN)/python -m benchmarks.learner_startup
	$(BIN)/python -m benchmarks.freshness

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
