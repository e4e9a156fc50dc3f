# Set-up glue: a virtual environment, the test bed's PostgreSQL servers, pytest.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test provision

$(PY): tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r tests/requirements.txt
	touch $(PY)

provision: $(PY)
	$(PY) -m tests.testbed provision

test: provision
	$(PY) -m pytest
