# The two quick-start commands: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck protos dashboards bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

# One full cycle of the demo's phases (trip and recovery); `make demo DEMO_ARGS=` runs until Ctrl-C.
DEMO_ARGS ?= --duration 60

demo: $(STAMP)
	$(BIN)/sidecar demo $(DEMO_ARGS) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

dashboards: $(STAMP)
	$(BIN)/python dashboards/build.py

protos: $(STAMP)
	$(BIN)/python scripts/genproto.py

bench: $(STAMP)
	$(BIN)/python benchmarks/breaker_overhead.py

clean:
	rm -rf $(VENV)
