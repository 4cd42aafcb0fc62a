# Every target installs what it needs on a fresh Debian 12 machine (Python 3.11, Node 20).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt
DEMO_DIR ?= .demo
DEMO_PORT ?= 8888
PYTEST_ARGS ?=

.PHONY: help install lint typecheck test demo bench lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@echo "==> creating $(VENV) and installing qustody with its pinned dependencies"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ".[server,hub,test]"
	touch $@

install: $(STAMP) ## create .venv and install everything (pinned by requirements/constraints.txt)

lint: $(STAMP) ## ruff
	$(BIN)/ruff check hub_ext server_ext tests benchmarks

typecheck: $(STAMP) ## mypy --strict on the packages
	$(BIN)/mypy

test: $(STAMP) lint typecheck ## lint, type-check and run the whole test suite
	$(BIN)/pytest $(PYTEST_ARGS)

demo: $(STAMP) ## start Qustody on 127.0.0.1 and print the URL
	@mkdir -p $(DEMO_DIR)
	@$(BIN)/python -m server_ext.demo --root $(DEMO_DIR) --port $(DEMO_PORT)

bench: $(STAMP) ## run the benchmarks (prints figures; not part of make test)
	$(BIN)/python benchmarks/bench_scanner.py
	$(BIN)/python benchmarks/bench_save.py

lock: ## re-resolve requirements/constraints.txt from pyproject.toml
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade "pip>=24"
	.lock-venv/bin/pip install --quiet -e ".[server,hub,test]"
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^-e ' | sort > $(CONSTRAINTS)
	rm -rf .lock-venv

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache $(DEMO_DIR)
