# The two commands a newcomer needs: `make demo` and `make test`.
# Everything is installed into $(VENV); services the tests need go into .services/.

PYTHON ?= python3
VENV ?= .venv
AIRFLOW_VERSION ?= 3.3.2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-airflow-$(AIRFLOW_VERSION)

.PHONY: install services demo test lint typecheck pytest e2e bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev]" "apache-airflow==$(AIRFLOW_VERSION)"
	touch $@

install: $(STAMP)

services:
	bash .ci/install-services.sh

lint: install
	$(BIN)/ruff check memories_provider tests dags bench

typecheck: install
	$(BIN)/mypy memories_provider

pytest: install services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The distributed end-to-end test alone (Airflow 3: CeleryExecutor, two workers, two triggerers,
# Postgres, Redis); `make test` runs it too. Prints its wall and CPU time.
e2e: install services
	$(BIN)/python -m pytest tests/e2e/test_distributed_deployment.py -m distributed_e2e -rP $(PYTEST_ARGS)

demo: install
	$(BIN)/python -m memories_provider.demo

bench: install services
	$(BIN)/python bench/run.py

clean:
	rm -rf .venv .venv-* .services build dist *.egg-info
