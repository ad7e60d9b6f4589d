# mbprompt: one command to run (`make run`), one to test (`make test`).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/quickstart.yaml
# The dataset and registered name CONFIG sets (parameters.dataset / parameters.model_name), read from the YAML.
DATASET ?= $(or $(shell sed -n 's/^  dataset: *\([A-Za-z0-9_-]*\).*/\1/p' $(CONFIG) 2>/dev/null | head -1),ml1m)
MLFLOW_DIR := $(CURDIR)/.mlflow
TRACKING_URI := sqlite:///$(MLFLOW_DIR)/mlflow.db
MODEL_NAME ?= $(or $(shell sed -n 's/^  model_name: *\([A-Za-z0-9._-]*\).*/\1/p' $(CONFIG) 2>/dev/null | head -1),mbprompt-$(DATASET))
PORT ?= 5001

export ZENML_ANALYTICS_OPT_IN := false
export ZENML_AUTO_OPEN_DASHBOARD := false
export ZENML_ENABLE_RICH_TRACEBACK := false
export ZENML_LOGGING_VERBOSITY ?= INFO
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export PYTHONUNBUFFERED := 1

.PHONY: install setup data run test mlflow-ui mlflow-ui-stop serve serve-stop bench clean-local

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
	@$(BIN)/python -m components.registry.summary --tracking-uri $(TRACKING_URI) --dataset $(DATASET) \
		--model-name $(MODEL_NAME)

test: install data
	$(BIN)/python -m pytest -q

mlflow-ui: install
	@setsid $(BIN)/mlflow ui --backend-store-uri $(TRACKING_URI) --host 127.0.0.1 --port 5000 \
		> .mlflow/ui.log 2>&1 & echo $$! > .mlflow/ui.pid
	@echo "MLflow UI starting at http://127.0.0.1:5000 (log: .mlflow/ui.log; stop: make mlflow-ui-stop)"

mlflow-ui-stop:
	@test -f .mlflow/ui.pid && kill -- -$$(cat .mlflow/ui.pid) && rm .mlflow/ui.pid || true

# The champion of MODEL_NAME over REST (POST /invocations; GET /ping answers once the model is loaded).  The venv
# goes first on PATH because `mlflow models serve` starts `uvicorn` by name.
serve: install
	@mkdir -p $(MLFLOW_DIR)
	@if test -f $(MLFLOW_DIR)/serve.pid && kill -0 $$(cat $(MLFLOW_DIR)/serve.pid) 2>/dev/null; then \
		echo "already serving (pid $$(cat $(MLFLOW_DIR)/serve.pid)); stop it first: make serve-stop"; exit 1; fi
	@PATH=$(CURDIR)/$(BIN):$$PATH MLFLOW_TRACKING_URI=$(TRACKING_URI) setsid $(BIN)/mlflow models serve \
		-m models:/$(MODEL_NAME)@champion -h 127.0.0.1 -p $(PORT) --env-manager local \
		> $(MLFLOW_DIR)/serve.log 2>&1 & echo $$! > $(MLFLOW_DIR)/serve.pid
	@echo "Serving models:/$(MODEL_NAME)@champion at http://127.0.0.1:$(PORT)/invocations once" \
		"http://127.0.0.1:$(PORT)/ping answers (log: $(MLFLOW_DIR)/serve.log; stop: make serve-stop)"

serve-stop:
	@test -f $(MLFLOW_DIR)/serve.pid && kill -- -$$(cat $(MLFLOW_DIR)/serve.pid) && rm $(MLFLOW_DIR)/serve.pid || true

bench: install
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.train

# The ZenML dashboard (runs, DAGs, the validation and evaluation reports): a local ZenML server in the background
# (`zenml login --local`, no browser), on the same local store; the client talks to it until zenml-ui-stop.
ZENML_UI_PORT ?= 8237
.PHONY: zenml-ui zenml-ui-stop

zenml-ui: setup
	$(BIN)/zenml login --local --port $(ZENML_UI_PORT)
	@# login makes "default" the active stack: make ours active again, on the server now
	@$(BIN)/python -m infra.stacks.local_stack --mlflow-dir $(MLFLOW_DIR)
	@echo "ZenML dashboard at http://127.0.0.1:$(ZENML_UI_PORT) (stop: make zenml-ui-stop)"

zenml-ui-stop:
	$(BIN)/zenml logout --local
