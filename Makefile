# The two commands in the README are the contract: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NATIVE := $(VENV)/.native
NATIVE_PTH := tickline-native.pth
# The hot path's modules (tickline/tuning.py NATIVE_MODULES) are compiled against these.
CORE_DIRS := protocol exchange gateway journal notifier cluster telemetry netio
CORE_SOURCES := $(shell find $(CORE_DIRS) -name '*.py' 2>/dev/null) tickline/tuning.py
# The pure-Python run of `make test`: the core's own tests and the order types end to end.
PURE_TESTS := tests/test_book_properties.py tests/test_book_rules.py tests/test_connection.py tests/test_matching.py \
	tests/test_protocol.py tests/test_risk.py tests/test_e2e_order_types.py tests/test_e2e_session.py tests/test_e2e_promises.py

.PHONY: run test test-pure native pure lint bench bench-engine bench-restart bench-crashloop bench-fanout bench-queries bench-memory bench-jetstream bench-cluster cluster-up cluster-down install clean

$(STAMP): pyproject.toml web/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench,cluster]'
	@# The dashboard's chart library, served by the server itself (no CDN, no build step).
	@if command -v npm >/dev/null; then cd web && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the dashboard will run without its candle chart (install Node.js and npm, then make install)"; fi
	touch $(STAMP)

# The hot path compiled with mypyc (Debian: gcc; the Python headers come with Python).
# TICKLINE_NATIVE=0 keeps it pure Python; without a compiler it stays pure, and says so.
$(NATIVE): $(STAMP) $(CORE_SOURCES) Makefile
	@$(MAKE) --no-print-directory pure
	@if [ "$${TICKLINE_NATIVE:-1}" = 0 ]; then echo "TICKLINE_NATIVE=0: the hot path runs as pure Python"; \
	elif ! command -v $${CC:-gcc} >/dev/null; then echo "no C compiler (Debian: apt-get install gcc): the hot path runs as pure Python"; \
		[ "$${TICKLINE_REQUIRE_NATIVE:-0}" = 0 ]; \
	else echo "compiling the hot path with mypyc (about a minute; make pure undoes it)"; \
		if ! $(VENV)/bin/mypyc $$($(PY) -m tickline.tuning) > $(VENV)/native.log 2>&1; then \
			tail -20 $(VENV)/native.log; $(MAKE) --no-print-directory pure; \
			echo "compiling failed (all of it in $(VENV)/native.log): the hot path runs as pure Python"; \
			[ "$${TICKLINE_REQUIRE_NATIVE:-0}" = 0 ]; fi; fi
	@# The compiled modules share one library at the project's root (*__mypyc*.so), which the
	@# editable install does not map: named on sys.path, `tickline` runs from any directory.
	$(PY) -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], '$(NATIVE_PTH)').write_text('$(CURDIR)\n')"
	touch $(NATIVE)

native: $(NATIVE)

# Back to pure Python: Python imports a compiled module whenever its file is there.
pure:
	rm -rf build $(NATIVE) *__mypyc.*.so $(VENV)/lib/python*/site-packages/$(NATIVE_PTH)
	find $(CORE_DIRS) -name '*.so' -delete

install: $(STAMP) $(NATIVE)

run: $(STAMP) $(NATIVE)
	@echo "tickline: order entry on 127.0.0.1:7001, market data on 127.0.0.1:7002, dashboard at http://127.0.0.1:7080/"
	$(VENV)/bin/tickline serve --demo

test: lint $(NATIVE)
	$(PY) -m pytest
	$(MAKE) --no-print-directory test-pure

# The same sources as pure Python, in a copy without the compiled files.
test-pure: $(STAMP)
	rm -rf $(VENV)/pure && mkdir -p $(VENV)/pure
	tar -cf - --exclude=./.venv --exclude=./.git --exclude=./var --exclude=./build --exclude='*.so' \
		--exclude=./web/node_modules --exclude='.*_cache' --exclude=./.hypothesis . | tar -xf - -C $(VENV)/pure
	cd $(VENV)/pure && $(CURDIR)/$(PY) -c "from tickline.tuning import native_modules; assert not native_modules()[0]"
	cd $(VENV)/pure && $(CURDIR)/$(PY) -m pytest -q -p no:cacheprovider $(PURE_TESTS)

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

clean: pure
	rm -rf $(VENV) var web/node_modules
