# Orderflow: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup services services-stop k8s-tools lint unit integration e2e faults bench clean

run: setup services  ## start all five workers, push a sample batch, keep running until Ctrl-C
	$(BIN)/python scripts/demo.py

test: setup services k8s-tools lint  ## lint, then the whole suite against the real RabbitMQ and store
	$(BIN)/pytest

setup: $(STAMP)  ## virtualenv with the project and its dev tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

services: setup  ## start RabbitMQ and the MongoDB-compatible store unless already reachable
	scripts/services.sh start

services-stop:
	scripts/services.sh stop

k8s-tools:  ## kustomize and kubeconform, for checking deploy/k8s/ offline (built once, cached)
	scripts/k8s-tools.sh install

unit: setup k8s-tools
	$(BIN)/pytest tests/unit

integration: setup services
	$(BIN)/pytest tests/integration

e2e: setup services
	$(BIN)/pytest tests/e2e

faults: setup services
	$(BIN)/pytest tests/faults

bench: setup services  ## the standard benchmark set (docs/performance.md); make bench RUNS="burst paced"
	$(BIN)/python scripts/bench.py $(RUNS)

lint: setup  ## ruff and mypy
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache
