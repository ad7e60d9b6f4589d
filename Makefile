# mbprompt: one command to run (`make run`), one to test (`make test`).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/quickstart.yaml
DATASET ?= ml1m
MLFLOW_DIR := $(CURDIR)/.mlflow
TRACKING_URI := sqlite:///$(MLFLOW_DIR)/mlflow.db

export ZENML_ANALYTICS_OPT_IN := false
export ZENML_AUTO_OPEN_DASHBOARD := false
export ZENML_ENABLE_RICH_TRACEBACK := false
export ZENML_LOGGING_VERBOSITY ?= INFO
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export PYTHONUNBUFFERED := 1

.PHONY: install setup data run test mlflow-ui mlflow-ui-stop bench clean-local

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

install: $(BIN)/.installed

setup: install
	@test -d .zen || $(BIN)/zenml init
	$(BIN)/python -m infra.stacks.local_stack --mlflow-dir $(MLFLOW_DIR)

data/ml-1m/ml-1m.inter: | install
	$(BIN)/python -m components.data.fetch ml1m --data-dir data

data: data/ml-1m/ml-1m.inter

run: setup data
	$(BIN)/zenml pipeline run pipelines.training.training_pipeline -c $(CONFIG)
	@$(BIN)/python -m components.registry.summary --tracking-uri $(TRACKING_URI) --dataset $(DATASET)

test: install data
	$(BIN)/python -m pytest -q

mlflow-ui: install
	@setsid $(BIN)/mlflow ui --backend-store-uri $(TRACKING_URI) --host 127.0.0.1 --port 5000 \
		> .mlflow/ui.log 2>&1 & echo $$! > .mlflow/ui.pid
	@echo "MLflow UI starting at http://127.0.0.1:5000 (log: .mlflow/ui.log; stop: make mlflow-ui-stop)"

mlflow-ui-stop:
	@test -f .mlflow/ui.pid && kill -- -$$(cat .mlflow/ui.pid) && rm .mlflow/ui.pid || true

bench: install
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.train
