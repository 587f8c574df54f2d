# Two commands do everything on a fresh machine with Python 3.11+ and make:
#   make demo   - create .venv, install ferry, run `ferry demo`
#   make test   - create .venv, install ferry with test tools, lint, type-check, run the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint unit chaos bench install install-dev clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("ferry needs Python 3.11+, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/ferry demo $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests
	$(BIN)/mypy

# Two test processes (pytest-xdist), each taking a whole file at a time so module fixtures are built once:
# most tests wait on sandboxes over sockets, so two share CI's 2 cores well. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
unit: $(VENV)/.installed-dev
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

test: lint unit

# The issue-5 benchmarks (hours on a 2-core machine: hot path, end to end at 10k and 100k orders,
# memory at 10k, 30k and 100k); rewrites the issue-5 section of bench/RESULTS.md.
bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run_all.py $(ARGS)

# Every test marked slow (`make test` deselects them and runs their short versions): the long chaos run of each
# pair (demo-sized store, 30+ SIGKILLs), the distributed one (3 workers, NATS and PostgreSQL restarts), the
# PostgreSQL chaos run, the long `ferry serve` chaos, the slow distributed tests (budget pause, a worker waiting
# for its database); prints the figures. One pair: make chaos ARGS='-k woocommerce'.
chaos: $(VENV)/.installed-dev
	$(BIN)/pytest tests -m slow -s -p no:cacheprovider $(ARGS)

clean:
	rm -rf $(VENV) .ferry .pytest_cache .mypy_cache .ruff_cache
