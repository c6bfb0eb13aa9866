# Everything starts from a bare python3: the first target run creates .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean sandbox serve browser

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m compileall -q pipeline schemas  # as a wheel's install does: no run compiles them again
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pipeline.demo

# The browser tests drive Debian's Chromium; on a fresh machine (as root) it is installed here.
CHROMIUM := /usr/bin/chromium

browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null; \
	  else \
	    echo "Chromium ($(CHROMIUM)) is missing and cannot be installed here: the browser tests will fail"; \
	  fi; \
	fi

# The command-line tests run a second time without fcntl, as on Windows (tests/without_fcntl).
WITHOUT_FCNTL := PYTHONPATH=$(CURDIR)/tests/without_fcntl
WINDOWS_LIKE_TESTS := tests/test_cli.py tests/test_lock.py tests/test_checkconfig.py tests/test_hardening.py \
	tests/test_inbox.py::test_command_line_second_concurrent_run_exits_3

test: $(STAMP) browser
	$(PY) -m pytest -n 2 tests
	$(WITHOUT_FCNTL) $(PY) -c "import fcntl" 2>/dev/null && { echo "fcntl was not blocked"; exit 1; } || true
	$(WITHOUT_FCNTL) $(PY) -m pytest -n 2 -p no:cacheprovider -W ignore::UserWarning $(WINDOWS_LIKE_TESTS)

serve: $(STAMP)
	$(PY) -m pipeline.web.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline schemas tests bench
	$(VENV)/bin/mypy pipeline schemas bench
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/run.py $(if $(BIG),--big,)

clean:
	rm -rf $(VENV) demo-out bench/data bench/out
