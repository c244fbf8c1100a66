# centflow — `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell for p in python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not ((3,11) <= sys.version_info[:2] < (3,13)))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out
PYTEST_ARGS ?=
BENCH_RISK_ARGS ?=

.PHONY: help setup run test bench bench-risk broker lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "centflow needs Python 3.11 or 3.12 (Bytewax 0.21.1 ships no other wheels)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' 2>&1 | { grep -v -e '^WARNING: Location' -e BuildBackendWarning || true; }
	@touch $(STAMP)

setup: $(STAMP) ## make .venv and install centflow with its test extras

run: $(STAMP) ## the whole pipeline on the shipped log, through a local broker, into out/
	$(BIN)/centflow demo --out $(OUT)

test: $(STAMP) ## the whole test suite (slow soak/bench runs excluded)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP) ## throughput, latency and memory on a generated 500k-event log -> BENCHMARKS.md
	$(BIN)/python -m centflow.ops.bench --events 500000 --write BENCHMARKS.md

bench-risk: $(STAMP) ## risk quality (AUC, bursts stopped, false declines; a signals-only stream) on seeds never tuned on -> BENCHMARKS.md
	$(BIN)/python -m centflow.ops.bench_risk --write BENCHMARKS.md $(BENCH_RISK_ARGS)
	$(BIN)/python -m centflow.ops.bench_signals --write BENCHMARKS.md

broker: $(STAMP) ## a local Kafka-compatible broker on 127.0.0.1:9092 (Ctrl-C stops it)
	$(BIN)/centflow broker --port 9092

lint: $(STAMP) ## ruff (format + lint) and mypy
	$(BIN)/ruff format --check centflow dataflows sinks tests
	$(BIN)/ruff check centflow dataflows sinks tests
	$(BIN)/mypy centflow dataflows sinks

clean: ## remove .venv and out/
	rm -rf $(VENV) $(OUT)
