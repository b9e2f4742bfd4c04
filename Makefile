# Two commands for a fresh machine with only python3 and pip:  make demo   |   make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint format install clean

$(BIN)/jaxfin: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/jaxfin

demo: install
	$(BIN)/python -m jaxfin.demo

lint: install
	$(BIN)/ruff check jaxfin tests benchmarks
	$(BIN)/ruff format --check jaxfin tests benchmarks

format: install
	$(BIN)/ruff format jaxfin tests benchmarks
	$(BIN)/ruff check --fix jaxfin tests benchmarks

test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

clean:
	rm -rf runs
