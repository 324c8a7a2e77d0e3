# sgd-suite: `make bench` and `make test` each create .venv and install what is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A CPU wheel of this torch lies on the dev/CI machines' disk; elsewhere pip picks the CUDA build.
TORCH_PIN ?= torch==2.13.0
PLUGINS := $(sort $(dir $(wildcard plugins/*/setup.cfg)))
PIP := $(BIN)/python -m pip -qq --disable-pip-version-check
MLFLOW_TRACKING_URI ?= sqlite:///mlflow.db
# `make server`: the shared MLflow tracking server (PostgreSQL backend, artifacts served by it).
LOCAL_MLFLOW_DB := postgresql://suite:suite@127.0.0.1:5432/mlflow
MLFLOW_BACKEND_STORE_URI ?= $(LOCAL_MLFLOW_DB)
MLFLOW_ARTIFACTS ?= $(CURDIR)/mlartifacts
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
# `make dashboard`: optuna-dashboard on the Optuna study storage (suite tune's default journal file).
SUITE_STORAGE ?= .suite/optuna.journal
DASHBOARD_PORT ?= 8080
# `make bench BENCH_FLAGS=--verbose`: a line per run and per trial
BENCH_FLAGS ?=

.PHONY: install test test-fast bench bench-networks perf tune ui dashboard postgres server lint clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt $(wildcard plugins/*/setup.cfg)
	@echo "== installing sgd-suite into $(VENV) (first time: about a minute)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_PIN)"
	@$(PIP) install -c constraints.txt -e '.[test,postgres,dashboard]' $(foreach p,$(PLUGINS),-e ./$(p))
	@touch $@

# Tests run on up to 4 pytest-xdist workers (one per core), handed out one at a time, the slow
# end-to-end ones first, so that they spread over the workers.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
test: install
	$(BIN)/python -m pytest -q -ra -n $(TEST_WORKERS) --maxschedchunk 1

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# Its output ends with the claims summary, the report's path and the MLflow URL of the runs table;
# `make ui` serves that URL. --verbose: a line per run and per trial instead of progress bars.
bench: install
	@echo "== make bench: benchmarks/lecture.yaml (grids, then Optuna studies in .suite/optuna.journal) into $(MLFLOW_TRACKING_URI)"
	@$(BIN)/suite run benchmarks/lecture.yaml --tracking-uri $(MLFLOW_TRACKING_URI) $(BENCH_FLAGS)

# The batch-size scaling study on networks (docs/networks.md): QUICK by default (benchmarks/networks-quick.yaml),
# NETWORKS=full for benchmarks/networks.yaml (a bigger machine or a GPU). First the NQM fitted to each
# workload (`suite nqm fit`, into the same experiment), then the tuned studies and the report, which overlays them.
, := ,
NETWORKS ?= quick
NETWORKS_NAME := $(if $(filter full,$(NETWORKS)),networks,networks-quick)
NETWORKS_FIT := --experiment $(NETWORKS_NAME) --tracking-uri $(MLFLOW_TRACKING_URI)
MNIST1D_SIZES := $(if $(filter full,$(NETWORKS)),2$(,)4$(,)8$(,)16$(,)32$(,)64$(,)128$(,)256$(,)512$(,)1024$(,)2048,4$(,)16$(,)32$(,)64$(,)256$(,)2048)
DIGITS_SIZES := $(if $(filter full,$(NETWORKS)),1$(,)2$(,)4$(,)8$(,)16$(,)32$(,)64$(,)128$(,)256$(,)512$(,)1024,2$(,)8$(,)16$(,)32$(,)128$(,)1024)
bench-networks: install
	@echo "== make bench-networks ($(NETWORKS)): the NQM fitted to each workload, then benchmarks/$(NETWORKS_NAME).yaml into $(MLFLOW_TRACKING_URI)"
	@$(BIN)/suite nqm fit --problem mnist1d_mlp --batch-sizes $(MNIST1D_SIZES) --target-loss 1.45 $(NETWORKS_FIT)
	@$(BIN)/suite nqm fit --problem digits --batch-sizes $(DIGITS_SIZES) --reference-steps 1000 --target-loss 0.15 $(NETWORKS_FIT)
	@if [ "$(NETWORKS)" = full ]; then $(BIN)/suite nqm fit --problem mnist1d_cnn --batch-sizes $(MNIST1D_SIZES) \
	  --target-loss 1.45 $(NETWORKS_FIT); fi
	@$(BIN)/suite run benchmarks/$(NETWORKS_NAME).yaml --tracking-uri $(MLFLOW_TRACKING_URI) $(BENCH_FLAGS)

# Speed benchmarks (tables measured side by side; not tests). whole.py installs benchopt in .venv-perf
# (never in $(VENV)); benchmarks/perf/lecture_mwe.py is the lecture's script that whole.py times.
PERF_SCRIPTS := benchmarks/perf/engine.py benchmarks/perf/whole.py benchmarks/perf/networks.py benchmarks/perf/shared.py \
	benchmarks/perf/server.py benchmarks/perf/gpu_networks.py benchmarks/perf/report.py
perf: install
	@for f in $(PERF_SCRIPTS); do echo "== $$f"; $(BIN)/python $$f || exit 1; done

tune: install
	$(BIN)/suite tune --problem logistic

# MLflow 3.17's UI starts a job runner and its huey workers (about 7 processes of 250 MB) for GenAI
# jobs the suite never submits: MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false leaves them out.
UI_PORT ?= 5000
# It prints each experiment's runs-table URL first (suite/tracking/ui_links.py says why; a store it
# cannot read only skips them) and, where a desktop browser exists, opens the newest once the UI answers.
ui: install
	-@$(BIN)/python -m suite.tracking.ui_links '$(MLFLOW_TRACKING_URI)' $(UI_PORT)
	-@$(BIN)/python -m suite.tracking.ui_links '$(MLFLOW_TRACKING_URI)' $(UI_PORT) --open >/dev/null 2>&1 &
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --host 127.0.0.1 --port $(UI_PORT) \
	  --backend-store-uri $(MLFLOW_TRACKING_URI)

# Every Optuna study (suite tune's, shared grids') side by side: http://127.0.0.1:$(DASHBOARD_PORT)
dashboard: install
	@case '$(SUITE_STORAGE)' in *://*) ;; *) test -e '$(SUITE_STORAGE)' || { \
	  echo "no Optuna storage at $(SUITE_STORAGE): run suite tune first, or give SUITE_STORAGE=URL"; exit 2; } ;; esac
	$(BIN)/optuna-dashboard '$(SUITE_STORAGE)' --host 127.0.0.1 --port $(DASHBOARD_PORT)

# A local PostgreSQL (Debian packages; installed and started if needed) with databases for
# Optuna studies (suite) and the MLflow server (mlflow). Prints `export SUITE_PG_URL=...`.
postgres:
	@scripts/pg-start suite mlflow

# The MLflow tracking server every worker logs to. Other machines reach it when started with
# MLFLOW_HOST=0.0.0.0 (and --allowed-hosts through MLFLOW_SERVER_OPTS if they use a DNS name).
server: install
ifeq ($(MLFLOW_BACKEND_STORE_URI),$(LOCAL_MLFLOW_DB))
	@scripts/pg-start suite mlflow >/dev/null
endif
	$(BIN)/mlflow server --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) \
	  --backend-store-uri '$(MLFLOW_BACKEND_STORE_URI)' \
	  --serve-artifacts --artifacts-destination '$(MLFLOW_ARTIFACTS)' $(MLFLOW_SERVER_OPTS)

lint: install
	$(BIN)/ruff check suite tests plugins

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
