# Courier Gateway: `make dev` runs the gateway locally, `make test` installs everything and runs
# lint and the test suite. Both create .venv on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make dev` needs only the gateway and its embedded store, not the dev tools of `make test`.
RUNTIME_STAMP := $(VENV)/.installed-runtime
LINT_PATHS := $(wildcard services operator tests loadtest)
TEST_JOBS ?= 3
# The end-to-end modules that `make test-cluster` runs again with the queue on a Redis Cluster.
CLUSTER_E2E := tests/worker/test_processing.py tests/worker/test_retries.py \
	tests/worker/test_replay.py tests/worker/test_recovery.py tests/worker/test_tenancy.py \
	tests/queue/test_stream_maintenance.py tests/adapters/test_end_to_end.py tests/cli/test_events.py

.PHONY: dev test test-cluster lint format bench clean venv

$(PY):
	@python=$$(.ci/find-python) && echo "creating $(VENV) with $$python" && "$$python" -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP) $(RUNTIME_STAMP)

$(RUNTIME_STAMP): pyproject.toml | $(PY)
	@echo "installing the gateway and its embedded store into $(VENV) (about a minute, once)"
	$(PY) -m pip install --progress-bar on -e '.[embedded]'
	@touch $(RUNTIME_STAMP)

venv: $(STAMP)

dev: $(RUNTIME_STAMP)
	@.ci/ensure-tools redis-server:redis-server
	@$(VENV)/bin/courier-gateway dev

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format $(LINT_PATHS)
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)

test: $(STAMP)
	@.ci/ensure-tools redis-server:redis-server prometheus:prometheus promtool:prometheus wrk:wrk
	$(MAKE) --no-print-directory lint
	@# Most tests wait on real processes, so three run at once; the few that measure timing
	@# (latency under attack, failover and restart windows) run alone afterwards.
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile -m "not serial"
	$(PY) -m pytest -m serial

# The same end-to-end modules with every stack's queue on a real 3+3 Redis Cluster, six
# partitions (not part of `make test`, which runs tests/topologies/ for the cluster instead).
test-cluster: $(STAMP)
	@.ci/ensure-tools redis-server:redis-server
	CG_TEST_QUEUE=cluster $(PY) -m pytest -n $(TEST_JOBS) --dist loadfile $(CLUSTER_E2E)

bench: $(STAMP)
	@.ci/ensure-tools redis-server:redis-server wrk:wrk
	$(PY) -m loadtest bench

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache .hypothesis
