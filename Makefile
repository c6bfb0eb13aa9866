# Everything starts from a bare python3: the first target run creates .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean sandbox

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pipeline.demo

# The command-line tests run a second time without fcntl, as on Windows (tests/without_fcntl).
WITHOUT_FCNTL := PYTHONPATH=$(CURDIR)/tests/without_fcntl
WINDOWS_LIKE_TESTS := tests/test_cli.py tests/test_lock.py tests/test_checkconfig.py tests/test_hardening.py \
	tests/test_inbox.py::test_command_line_second_concurrent_run_exits_3

test: $(STAMP)
	$(PY) -m pytest -n 2 tests
	$(WITHOUT_FCNTL) $(PY) -c "import fcntl" 2>/dev/null && { echo "fcntl was not blocked"; exit 1; } || true
	$(WITHOUT_FCNTL) $(PY) -m pytest -n 2 -p no:cacheprovider -W ignore::UserWarning $(WINDOWS_LIKE_TESTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline schemas tests bench
	$(VENV)/bin/mypy pipeline schemas bench
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) demo-out bench/data bench/out
