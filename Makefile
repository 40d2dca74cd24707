# Needs only python3 (3.11+) and make. Everything else lands in .venv from the lock files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-dev run demo test schemas lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements/lock.txt pyproject.toml
	$(BIN)/pip install --quiet -r requirements/lock.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements/dev-lock.txt
	$(BIN)/pip install --quiet -r requirements/dev-lock.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/impromptu run

demo: install
	$(BIN)/impromptu demo

test: install-dev
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench
	$(BIN)/pytest

schemas: install
	$(BIN)/impromptu schemas export

# Regenerate the lock files after changing dependencies in pyproject.toml.
lock: $(BIN)/python
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml -o requirements/lock.txt --python-version 3.11 --no-header --quiet
	$(BIN)/uv pip compile pyproject.toml --extra dev -o requirements/dev-lock.txt --python-version 3.11 --no-header --quiet

clean:
	rm -rf $(VENV) data
