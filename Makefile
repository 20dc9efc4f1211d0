# Each target sets up .venv on a fresh clone (python3 -m venv) and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml clients/codexctl/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--config-settings editable_mode=compat -e clients/codexctl -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/codexd demo

lint: $(STAMP)
	$(BIN)/ruff check codexd clients/codexctl/codexctl tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

# Each prints numbers against a baseline measured in the same run; nothing is asserted.
bench: $(STAMP)
	$(BIN)/python bench/rpc.py
	$(BIN)/python bench/config.py
	$(BIN)/python bench/jobs.py
	$(BIN)/python bench/limits.py
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/gateway.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
