# Set-up glue: a virtual environment, the test bed's PostgreSQL servers, pytest.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test provision demo

$(PY): tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r tests/requirements.txt
	touch $(PY)

provision: $(PY)
	$(PY) -m tests.testbed provision

# Two workers, each with its own servers; tests sharing files outside their
# temporary directories, or one parameter of a module-scoped fixture, are
# grouped onto one worker (tests/conftest.py).
test: provision
	$(PY) -m pytest -n 2 --dist loadgroup

# A throwaway PostgreSQL 15 with archiving and the extension, one backup through
# playbooks/backup.yml, pg_verifybackup, a restore; see tests/demo.py.
demo: $(PY)
	$(PY) -m tests.demo
