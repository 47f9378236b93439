# The README's two commands are `make run` and `make test`; both bootstrap .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The mypyc build of the hot engine modules (scripts/compile.py); without a C compiler, or if
# it fails, nothing is built and the engine runs as plain Python.
NATIVE := engine/native.json

.PHONY: install compile run test lint bench bench-ui bench-memory screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(NATIVE): $(STAMP) $(wildcard engine/*.py) scripts/compile.py
	$(PY) scripts/compile.py

# The bytecode of tui/ and engine/, as pip writes it for an installed package: an editable
# install has none, and where PYTHONDONTWRITEBYTECODE is set (as in many containers) every start
# compiled the app's sources again (a quarter of a second here).
BYTECODE := $(VENV)/.bytecode
$(BYTECODE): $(STAMP) $(wildcard tui/*.py tui/*/*.py engine/*.py)
	$(PY) -m compileall -q tui engine
	touch $(BYTECODE)

install: $(NATIVE) $(BYTECODE)

compile: $(STAMP)
	$(PY) scripts/compile.py

run: $(NATIVE) $(BYTECODE)
	$(VENV)/bin/wirepeek --demo

# The suite runs twice: on the compiled engine (when there is one) and on the plain Python code;
# the tests that drive real servers, hosts, terminals or the app (marked integration) run in the
# first, one at a time (they time real terminals and captures); the others on both cores.
test: lint $(NATIVE) $(BYTECODE)
	$(PY) -m pytest -q -m integration
	$(PY) -m pytest -q -m "not integration" -n 2
	WIREPEEK_PURE=1 $(PY) -m pytest -q -m "not integration" -n 2

# engine/ is formatted, linted and type-checked; make test runs this first.
lint: $(STAMP)
	$(VENV)/bin/ruff format --check engine
	$(VENV)/bin/ruff check engine
	$(VENV)/bin/mypy

bench: $(NATIVE) $(BYTECODE)
	$(PY) -m tests.bench.run

# Key-to-screen latency of the app under paced traffic and a list of 100,000+ connections.
bench-ui: $(NATIVE) $(BYTECODE)
	$(PY) -m tests.bench.ui

# What the interactive app's process holds after reading a capture, per --memory.
bench-memory: $(NATIVE) $(BYTECODE)
	$(PY) -m tests.bench.memory

# The README's pictures, from the bundled demo capture read as a file: the same on every run.
screenshots: $(STAMP)
	$(PY) scripts/make_screenshots.py

clean:
	rm -rf $(VENV) build *.egg-info engine/*.so $(NATIVE)
