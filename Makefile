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

# The browser tests drive Debian's chromium (Playwright never downloads a browser); install it when it is missing.
CHROMIUM := /usr/bin/chromium
install-dev: $(VENV)/.installed-dev
	@if [ ! -x $(CHROMIUM) ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
	    $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	  else \
	    echo "no $(CHROMIUM) and no apt-get: the browser tests will be skipped"; \
	  fi; \
	fi

run: install
	$(BIN)/impromptu run

demo: install
	$(BIN)/impromptu demo

test: install-dev
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench
	$(BIN)/deptry .
	$(BIN)/mypy
	$(BIN)/lint-imports
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
