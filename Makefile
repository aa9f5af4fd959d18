# jqueue: `make demo` runs the main job, `make test` runs the tests (both set up .venv first).
PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
STAMP = $(VENV)/.installed

.PHONY: venv bytecode test lint demo bench man clean ganeti-client browser musl

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,ganeti-compat]'
	touch $(STAMP)

# The package byte-compiled once: where PYTHONDONTWRITEBYTECODE is set (CI machines like
# ours), every process the tests and benchmarks start, hundreds of daemons, would compile
# every module again (0.3 s more per start; a tenth of the test run).
bytecode: venv
	$(PY) -m compileall -q jqueue

test: venv ganeti-client browser musl bytecode
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 2 tests

# Ganeti 3.0.2's client code for the compatibility test, from Debian's package (not
# installed: unpacked under build/). A failure here is not fatal: the test then fails
# saying why.
ganeti-client:
	-sh tools/fetch-ganeti

# The HTTP tests' clients from Debian's packages: headless Chromium and its driver (the
# browser test of the web page, tests/http/test_browser_e2e.py) and curl. Installed with
# apt-get when missing (CI runs as root); otherwise the tests fail saying what is missing.
BROWSER_PACKAGES = chromium chromium-driver curl

browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 \
	    || ! command -v curl >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing $(BROWSER_PACKAGES) (Debian)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      $(BROWSER_PACKAGES) >/dev/null; \
	  else \
	    echo "missing: $(BROWSER_PACKAGES) (apt-get install them as root)"; \
	  fi; \
	fi

# musl's static C library for the command shim (jqueue/exec/shims.py: it starts in a
# tenth of the time a glibc program takes on a virtual machine). Installed with apt-get
# when missing (CI runs as root); without it (or if that fails) the shim is built with
# cc, as before: nothing else depends on it.
musl:
	@if ! command -v musl-gcc >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
	    && [ "$$(id -u)" = 0 ]; then \
	  echo "installing musl-tools (Debian)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    musl-tools >/dev/null; } || echo "musl-tools not installed: the shim is built with cc"; \
	fi

lint: venv
	$(PY) -m ruff check .

demo: venv
	sh tools/demo

# The benchmarks, with Huey (the optional extra "bench") measured beside jqueue.
bench: venv musl bytecode
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/run.py

MAN_PAGES = $(patsubst man/%.rst,build/man/%,$(wildcard man/*.rst))

man: venv $(MAN_PAGES)

build/man/%: man/%.rst
	@mkdir -p build/man
	$(VENV)/bin/rst2man --halt=warning $< $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
