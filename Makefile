# Two commands for a newcomer: `make demo` and `make test`. Each builds .venv if needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.ixb-runtime
DEV_STAMP     := $(VENV)/.ixb-dev

.PHONY: demo test lint pytest bench faults clean venv compose-prepare

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(RUNTIME_STAMP)

venv: $(DEV_STAMP)

demo: $(RUNTIME_STAMP)
	$(BIN)/ixb demo

# Keys (with NATS nkeys), TLS certificates and configs for docker-compose.yml (then: docker compose up).
# Needs IXB_PASSPHRASE (it seals the key files); the containers read it from the compose
# secret this writes, deploy/secrets/ixb-passphrase (0600).
compose-prepare: $(RUNTIME_STAMP)
	$(BIN)/ixb compose prepare --out deploy/compose --passphrase-file deploy/secrets/ixb-passphrase

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest exits 5 when it collected no tests: that is a failure here, never green.
# The browser tests need Debian's Chromium: scripts/ensure-chromium installs it when absent;
# the alert rules' tests need promtool: scripts/ensure-promtool installs Debian's prometheus.
pytest: $(DEV_STAMP)
	bash scripts/ensure-chromium
	bash scripts/ensure-promtool
	$(BIN)/python -m pytest

test: lint pytest

# Not part of `make test`: about 13 minutes, 150 s of it the 1M-entry audit-log bench
# (BENCH_ARGS=--skip-audit reuses bench/audit_results.json; BENCH_ARGS="--only lookup" runs
# only the lookup floor, the document checks and the person query, about 4 minutes;
# BENCH_ARGS="--only scale" only THA clustered and THA's hub with two workers against one
# server and one worker, about 3 minutes).
# Writes bench/results.json.
BENCH_STAMP := $(VENV)/.ixb-bench

$(BENCH_STAMP): pyproject.toml $(DEV_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Not part of `make test` (which runs the fast half): every fault scenario on a live
# federation of real processes, then the clustered-country scenario on a federation where
# THA runs three nats-servers; about 5 minutes. Writes tests/faults/results.json and
# tests/faults/cluster-results.json.
faults: $(DEV_STAMP)
	$(BIN)/python -m tests.faults
	$(BIN)/python -m tests.faults --cluster --out tests/faults/cluster-results.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
