# The README's two commands are `make run` and `make test`; both bootstrap .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench bench-ui bench-memory screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/wirepeek --demo

test: lint
	$(PY) -m pytest -q

# engine/ is formatted, linted and type-checked; make test runs this first.
lint: $(STAMP)
	$(VENV)/bin/ruff format --check engine
	$(VENV)/bin/ruff check engine
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m tests.bench.run

# Key-to-screen latency of the app under paced traffic and a list of 100,000+ connections.
bench-ui: $(STAMP)
	$(PY) -m tests.bench.ui

# What the interactive app's process holds after reading a capture, per --memory.
bench-memory: $(STAMP)
	$(PY) -m tests.bench.memory

# The README's pictures, from the bundled demo capture read as a file: the same on every run.
screenshots: $(STAMP)
	$(PY) scripts/make_screenshots.py

clean:
	rm -rf $(VENV) build *.egg-info
