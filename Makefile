# The two commands of the README: `make demo` and `make test`. Both install what they need
# into .venv first (python3 with venv is the only prerequisite).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/helpline demo

# pytest exits 5 when it collected nothing: that is a failure here, never a pass.
# Tests run in parallel (pytest-xdist), one worker a core; TEST_WORKERS=0 runs them in one
# process. Tests marked slow run only with HELPLINE_TEST_SLOW=1 or under CI (.ci/run).
TEST_WORKERS ?= auto
test: $(VENV)/.installed
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) bench/roundtrip.py
	$(PY) bench/agent_memory.py
	$(PY) bench/diag_snapshot.py
	$(PY) bench/audit.py
	$(PY) bench/tickets.py
	$(PY) bench/idle_agents.py
	$(PY) bench/fuzz.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
