# ctlake — every target sets up what it needs (venv, wheels, Maven jars) and reuses the cache
# in $(CTLAKE_CACHE) (default ~/.cache/ctlake), so a second run is fast.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PROFILE ?= local
PYTEST_ARGS ?=

.PHONY: help venv demo test test-unit test-integration lint infra-up infra-down infra-status bench clean

help:
	@echo "make demo          run the end-to-end demo on local services (sets everything up)"
	@echo "make test          lint + unit + integration tests against real local services"
	@echo "make test-unit     pure-code tests only (no services)"
	@echo "make infra-up      start Kafka, MLflow, Elasticsearch on 127.0.0.1 (infra-down, infra-status)"
	@echo "make bench         run the benchmarks under bench/ (results in bench/results/)"

venv:
	@bash infra/local/bootstrap.sh

demo: venv
	$(VENV)/bin/ctlake --profile $(PROFILE) demo

lint: venv
	$(VENV)/bin/ruff check libs jobs tests bench pipelines setup.py

test: venv lint
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: venv
	$(PY) -m pytest tests/integration tests/e2e $(PYTEST_ARGS)

infra-up: venv
	$(VENV)/bin/ctlake --profile $(PROFILE) infra up

infra-down: venv
	$(VENV)/bin/ctlake --profile $(PROFILE) infra down

infra-status: venv
	$(VENV)/bin/ctlake --profile $(PROFILE) infra status

bench: venv
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	-$(VENV)/bin/ctlake infra down
	-$(VENV)/bin/ctlake --profile test infra down
	rm -rf lake .ctlake .ctlake-test .pytest_cache
