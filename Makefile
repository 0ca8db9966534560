# streamguard: `make help` lists the targets. CI runs `make test` (see .ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# bytewax 0.21.1 has wheels for CPython 3.8-3.12 only: pick the newest interpreter in that range.
PYTHON ?= $(shell for p in python3.12 python3.11 python3.10 python3; do $$p -c "import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 12)" >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV ?= .venv
PY := $(VENV)/bin/python
PEER_VENV ?= .venv-peer
SG := $(VENV)/bin/streamguard
PYTEST_ARGS ?=

.PHONY: help venv run up down status sql-apply test test-unit test-integration lint format \
        bench-decode bench-windows bench-scoring bench-flow bench-peer bench-quality profile-flow drill sql-check \
        mz-smoke deploy deploy-dry-run k8s-render k8s-check top dashboard test-alerts clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 12), "need Python 3.10-3.12 (bytewax 0.21.1 wheels)"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed ## Create the virtualenv under .venv and install streamguard (CPU)

run: venv ## Run the main job on the embedded local stack: bootstrap a model if needed, then live decisions
	$(SG) demo

up: venv ## Start the embedded local stack (Kafka-API broker + PostgreSQL 16)
	$(SG) up

down: venv ## Stop the embedded local stack
	$(SG) down

status: venv ## Show the local stack's health
	$(SG) status

sql-apply: venv ## Apply sql/ to the configured SQL store
	$(SG) sql apply

sql-check: venv ## Lint sql/ for Materialize and check each lookup the flow makes has its index
	$(SG) sql check

mz-smoke: venv ## Run the Materialize path against STREAMGUARD_SQL_URL (says SKIPPED unless it is Materialize)
	$(PY) -m streamguard.sql.mz_smoke

test: venv ## Run every test (unit, then integration against the real local broker and PostgreSQL)
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-unit: venv ## Run the unit tests only (no services, seconds)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: venv ## Run the integration tests only
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

lint: venv ## Check style (ruff; never rewrites), the import layers (docs/architecture.md) and lint sql/ for Materialize
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(SG) sql check

format: venv ## Rewrite files with ruff's fixes and formatter
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench-decode: venv ## Benchmark hot-path decoding: msgspec vs pydantic vs json, side by side
	$(PY) bench/bench_decode.py

bench-windows: venv ## Benchmark per-event sliding windows: our rolling state vs a Bytewax stateful_map, same events
	$(PY) -m bench.bench_windows

bench-scoring: venv ## Benchmark XGBoost scoring: per event vs micro-batches, 1 thread and all cores, CPU and GPU
	$(PY) bench/bench_scoring.py

bench-flow: venv ## Benchmark the scoring flow end to end on the local stack (throughput, latency)
	$(PY) bench/bench_flow.py

# The Quix Streams peer gets its own env: quixstreams pins an older confluent-kafka (bench/peer/requirements.txt).
$(PEER_VENV)/.installed: bench/peer/requirements.txt $(VENV)/.installed
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEER_VENV)/bin/python -m pip install --quiet -r bench/peer/requirements.txt \
		"xgboost==$$($(PY) -c 'import xgboost; print(xgboost.__version__)')"
	@touch $@

bench-peer: venv $(PEER_VENV)/.installed ## Benchmark the fraud flow vs the same job in Quix Streams, same broker and input
	$(PY) -m bench.bench_peer

QUALITY_ARGS ?=
bench-quality: venv ## Benchmark model quality: 3 unseen simulator seeds through the pipeline vs the handbook baseline (QUALITY_ARGS=...)
	$(PY) bench/bench_quality.py $(QUALITY_ARGS)

profile-flow: venv ## Profile the fraud flow over a backlog with py-spy (top functions; stacks in out/)
	$(PY) bench/profile_flow.py

DRILL_ARGS ?=
drill: venv ## Fault drill (<= 10 min): 1% hostile replay, kill -9 flows and broker, stop PostgreSQL; lost/dup counts
	timeout --signal=TERM 600 $(PY) -m streamguard.local.drill $(DRILL_ARGS)

OVERLAY ?= prod
deploy-dry-run: venv ## Print the chart values and the exact `waxctl dataflow deploy` command for OVERLAY (local|prod|gpu)
	$(PY) -m streamguard.deploy.manifests.waxctl --overlay $(OVERLAY) --dry-run

deploy: venv ## Deploy the fraud flow with waxctl, mirroring k8s/overlays/$(OVERLAY) (see k8s/README.md)
	$(PY) -m streamguard.deploy.manifests.waxctl --overlay $(OVERLAY)

k8s-render: venv ## Print the manifests of k8s/overlays/$(OVERLAY)
	$(PY) -m streamguard.deploy.manifests.render $(OVERLAY)

k8s-check: venv ## Validate every overlay: Kubernetes schemas (strict), custom resources, settings coverage
	$(PY) -m streamguard.deploy.manifests.checks

top: venv ## Watch the running flows live: throughput, lag, latency vs budget, decisions, drift, alerts
	$(SG) top

dashboard: venv ## Rebuild the Grafana dashboard JSON and its ConfigMap under k8s/monitoring from streamguard/operate/dashboard.py
	$(PY) -m streamguard.operate.dashboard

test-alerts: venv ## Check the alert rules and run their promtool cases (needs promtool: apt-get install prometheus)
	$(PY) -m pytest tests/unit/test_alert_rules.py tests/unit/test_dashboard.py $(PYTEST_ARGS)

clean: ## Remove the virtualenv and local state
	rm -rf $(VENV) $(PEER_VENV) .streamguard
