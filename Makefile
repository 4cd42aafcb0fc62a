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
# Three workers, each running whole test files (module fixtures stay on one worker), keep
# a 2-core CI machine busy: a fourth made the suite slower, since its time is CPU time
# (benchmarks/bench_suite_cpu.py shows which components use it).
# Files go out longest first (tests/conftest.py, by tests/file_seconds.json), not by their
# number of tests.
PYTEST_XDIST ?= -n 3 --dist loadfile --no-loadscope-reorder
# Every run prints its slowest set-ups, calls and teardowns: where the suite's time goes.
PYTEST_DURATIONS ?= --durations=40 --durations-min=5

.PHONY: help install guard-db lint typecheck test demo bench lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@echo "==> creating $(VENV) and installing qustody with its pinned dependencies"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ".[server,hub,kubernetes,test]"
	@# As in the image (images/build.py EXCLUDED): with rfc3987-syntax present, jsonschema
	@# builds a Lark grammar at import, 1.5-4 s of every hub, server and test-worker start.
	$(BIN)/pip uninstall --quiet --yes rfc3987-syntax lark
	touch $@

install: $(STAMP) ## create .venv and install everything (pinned by requirements/constraints.txt)

# As in the image: the guard's databases for its default rules, compiled once and loaded
# by every server, test server and `qustody scan` of this venv instead of compiling them
# (0.3 s of CPU each; server_ext/scanner/compiled.py). Made afresh at each run, so they
# are always the current rules' (a stale one would only be compiled again).
GUARD_DB := $(VENV)/share/qustody/guard-db
guard-db: $(STAMP) ## compile the guard's default databases into .venv (servers load them)
	@rm -rf $(GUARD_DB) && $(BIN)/python -m server_ext.guard_db $(GUARD_DB) >/dev/null

lint: $(STAMP) ## ruff
	$(BIN)/ruff check hub_ext server_ext tests benchmarks images jupyterhub_config.py

typecheck: $(STAMP) ## mypy --strict on the packages
	$(BIN)/mypy

test: $(STAMP) guard-db lint typecheck labext labext-check system-deps proxy-deps idp-deps ui-deps ## lint, type-check and run the whole test suite (starts dockerd, builds the image)
	@started=0; bash tools/dockerd.sh status || started=1; \
	trap 'if [ $$started = 1 ]; then bash tools/dockerd.sh stop; fi' EXIT; \
	$(MAKE) --no-print-directory image && $(BIN)/pytest $(PYTEST_XDIST) $(PYTEST_DURATIONS) $(PYTEST_ARGS)

demo: $(STAMP) guard-db labext proxy-deps idp-deps ## start the hub on 127.0.0.1 (hardened containers when Docker runs) and print the URL and logins
	@mkdir -p $(DEMO_DIR)
	@if [ "$$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then \
		$(MAKE) --no-print-directory image || echo "==> no Docker image: the demo falls back to local processes"; \
	fi
	@PATH="$(CURDIR)/$(PROXY_DIR)/node_modules/.bin:$(CURDIR)/$(BIN):$$PATH" \
		$(BIN)/python -m hub_ext.demo --state $(DEMO_DIR) --port $(DEMO_PORT)

bench: $(STAMP) system-deps labext ui-deps ## run the benchmarks (prints figures; not part of make test)
	$(BIN)/python benchmarks/bench_scanner.py
	$(BIN)/python benchmarks/bench_save.py
	$(BIN)/python benchmarks/bench_audit.py
	$(BIN)/python benchmarks/bench_qpu.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/bench_labext.py
	$(BIN)/python benchmarks/bench_courses.py
	-$(BIN)/python images/build.py vulns
	$(MAKE) --no-print-directory bench-spawn bench-login
	@# two uncached image builds from the same inputs: same id? (bench-spawn started dockerd)
	$(BIN)/python benchmarks/bench_image_repro.py

lock: ## re-resolve requirements/constraints.txt from pyproject.toml
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade "pip>=24"
	.lock-venv/bin/pip install --quiet -e ".[server,hub,kubernetes,test]"
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^-e ' | sort > $(CONSTRAINTS)
	rm -rf .lock-venv

clean: ## remove the virtualenv, caches and the demo's state (with its users' home volumes)
	@tag=$$(grep -sxE '[0-9a-f]{8}' "$(DEMO_DIR)/home-volumes-tag"); \
	if [ -n "$$tag" ]; then \
		docker info >/dev/null 2>&1 && docker volume ls -q -f name=qustody-demo-$$tag-home- \
			| xargs -r docker volume rm >/dev/null \
		|| echo "==> the demo's home volumes were not all removed (no Docker engine, or the demo" \
			"runs); they stay: docker volume ls -f name=qustody-demo-$$tag-home-"; \
	fi
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache $(DEMO_DIR) build \
		labextension/prebuilt labextension/lib labextension/build-test labextension/tsconfig.tsbuildinfo

# -- hardened containers: system packages, proxy, Docker engine, single-user image --------
# Debian's docker.io runs without a bridge or iptables (containers use host networking on
# 127.0.0.1); its state (data root, socket, pidfile, log) is in QUSTODY_DOCKER_DIR.
QUSTODY_DOCKER_DIR ?= /tmp/qustody-docker
export QUSTODY_DOCKER_DIR
export DOCKER_HOST ?= unix://$(QUSTODY_DOCKER_DIR)/docker.sock
PROXY_DIR := tools/proxy
PROXY_BIN := $(PROXY_DIR)/node_modules/.bin/configurable-http-proxy

.PHONY: system-deps proxy-deps dockerd dockerd-stop image image-lock image-info bench-spawn

system-deps: ## apt-get install docker.io, debootstrap, postgresql, chromium, nftables and prometheus (as root; no-op when present)
	@if command -v dockerd >/dev/null && command -v debootstrap >/dev/null \
		&& { command -v nft >/dev/null || [ -x /usr/sbin/nft ]; } \
		&& ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -x /usr/bin/chromium ] \
		&& [ -x /usr/bin/prometheus ]; then \
		echo "==> system-deps: docker.io, debootstrap, postgresql, chromium, nftables and prometheus are installed"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap postgresql chromium nftables; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; \
	else \
		echo "system-deps: as root, run: apt-get install -y docker.io debootstrap postgresql chromium nftables && apt-get install -y --no-install-recommends prometheus" >&2; exit 1; \
	fi

proxy-deps: $(PROXY_BIN) ## npm ci configurable-http-proxy into tools/proxy/node_modules

$(PROXY_BIN): $(PROXY_DIR)/package.json $(PROXY_DIR)/package-lock.json
	cd $(PROXY_DIR) && npm ci --no-audit --no-fund
	touch $@

dockerd: system-deps ## start Qustody's Docker engine (no-op when one answers on DOCKER_HOST)
	@bash tools/dockerd.sh start

dockerd-stop: ## stop the Docker engine, if tools/dockerd.sh started it
	@bash tools/dockerd.sh stop

image: $(STAMP) labext dockerd ## build the single-user image offline (skipped when one with the same inputs exists), its SBOMs and vulnerability report (build/image)
	$(BIN)/python images/build.py build
	@# a report, never a gate: it exits 0, and says "could not check" when it cannot
	-$(BIN)/python images/build.py vulns

image-lock: $(STAMP) ## re-resolve images/requirements.lock (hash-locked wheels for Python 3.11.2)
	$(BIN)/python images/build.py lock

image-info: $(STAMP) ## the current image's id and labels
	@$(BIN)/python images/build.py info

bench-spawn: $(STAMP) proxy-deps image ## spawn latency through the hub API, hardened vs not
	PATH="$(CURDIR)/$(PROXY_DIR)/node_modules/.bin:$$PATH" $(BIN)/python benchmarks/bench_spawn.py --host

# -- identity: the real OpenID provider (npm oidc-provider) for tests and the demo --------
IDP_DIR := tests/idp
IDP_STAMP := $(IDP_DIR)/node_modules/.package-lock.json

.PHONY: idp-deps

idp-deps: $(IDP_STAMP) ## npm ci oidc-provider into tests/idp/node_modules (needs Node 20: apt-get install nodejs npm)

$(IDP_STAMP): $(IDP_DIR)/package.json $(IDP_DIR)/package-lock.json
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm; } \
		|| { echo "idp-deps: install Node.js 20 and npm (apt-get install nodejs npm)" >&2; exit 1; }
	cd $(IDP_DIR) && npm ci --no-audit --no-fund
	touch $@

.PHONY: bench-login
bench-login: $(STAMP) proxy-deps idp-deps ## OIDC login round trip and refresh overhead (real provider and hub)
	PATH="$(CURDIR)/$(PROXY_DIR)/node_modules/.bin:$$PATH" $(BIN)/python benchmarks/bench_login.py

UI_DIR := tests/ui
UI_LIB := $(UI_DIR)/node_modules/playwright-core/package.json

.PHONY: ui-deps
ui-deps: $(UI_LIB) ## npm ci playwright-core (drives Debian's /usr/bin/chromium; downloads no browser)

$(UI_LIB): $(UI_DIR)/package.json $(UI_DIR)/package-lock.json
	cd $(UI_DIR) && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	touch $@

# -- the JupyterLab extension (labextension/): prebuilt, shipped in the wheel --------------
LABEXT_DIR := labextension
LABEXT_LINK := $(VENV)/share/jupyter/labextensions/@qustody/jupyterlab

.PHONY: labext labext-check

labext: $(STAMP) ## build the JupyterLab extension (npm ci + tsc + jupyter-builder; skipped when its sources are unchanged) and link it into .venv
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm; } \
		|| { echo "labext: install Node.js 20 and npm (apt-get install nodejs npm)" >&2; exit 1; }
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python $(LABEXT_DIR)/build.py
	@# what `pip install qustody` puts in share/jupyter; a link, so a rebuild shows at once
	@rm -rf $(LABEXT_LINK) && mkdir -p $(dir $(LABEXT_LINK)) \
		&& ln -s $(CURDIR)/$(LABEXT_DIR)/prebuilt/@qustody/jupyterlab $(LABEXT_LINK)

labext-check: labext ## eslint, and the extension's unit tests (node --test on the compiled TypeScript)
	cd $(LABEXT_DIR) && npm run --silent lint && npm test --silent
