# The two commands in the README are the contract: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench bench-engine bench-restart bench-crashloop bench-fanout bench-queries bench-memory bench-jetstream bench-cluster cluster-up cluster-down install clean

$(STAMP): pyproject.toml web/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench,cluster]'
	@# The dashboard's chart library, served by the server itself (no CDN, no build step).
	@if command -v npm >/dev/null; then cd web && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the dashboard will run without its candle chart (install Node.js and npm, then make install)"; fi
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@echo "tickline: order entry on 127.0.0.1:7001, market data on 127.0.0.1:7002, dashboard at http://127.0.0.1:7080/"
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

bench-crashloop: $(STAMP)
	$(PY) -m bench.crashloop

bench-fanout: $(STAMP)
	$(PY) -m bench.fanout

bench-queries: $(STAMP)
	$(PY) -m bench.queries

bench-memory: $(STAMP)
	$(PY) -m bench.memory

bench-jetstream: $(STAMP)
	$(PY) -m bench.jetstream

bench-cluster: $(STAMP)
	$(PY) -m bench.cluster

cluster-up: $(STAMP)
	$(PY) -m tickline.cli cluster up --demo

cluster-down: $(STAMP)
	$(PY) -m tickline.cli cluster down

clean:
	rm -rf $(VENV) var web/node_modules
