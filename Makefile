# Every target creates .venv and installs what it needs; nothing is expected to be installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Test workers: each one runs its own sandbox (PostgreSQL, Kafka, Stripe fake, Kubernetes emulator).
WORKERS ?= 2

.PHONY: venv lint test test-fast demo sandbox clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check operator webhook migrations tests
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -n $(WORKERS) --durations=10 -q

test-fast: venv
	$(BIN)/pytest -q tests/unit

demo: venv
	$(BIN)/kubepay demo

sandbox: venv
	$(BIN)/kubepay sandbox --env-file .sandbox.env

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
