# The two commands in the README are the contract: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench bench-engine bench-restart bench-fanout install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/tickline serve --demo

test: lint
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) -m bench.load

bench-engine: $(STAMP)
	$(PY) -m bench.engine

bench-restart: $(STAMP)
	$(PY) -m bench.restart

bench-fanout: $(STAMP)
	$(PY) -m bench.fanout

clean:
	rm -rf $(VENV) var
