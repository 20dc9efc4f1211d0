# Each target sets up .venv on a fresh clone (python3 -m venv) and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench fuzz soak clean

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

# Long versions of what `make test` runs briefly: property fuzzing with many more examples,
# atheris for 5 minutes when it installs, and the 10-minute soak (bench/soak.py).
fuzz: $(STAMP)
	CODEXD_FUZZ_EXAMPLES=20000 CODEXD_FUZZ_STEPS=200 $(BIN)/pytest -q -s tests/fuzz
	$(BIN)/python -m pip install --quiet atheris && mkdir -p .fuzz-corpus && \
		$(BIN)/python fuzz/fuzz_decoders.py -max_total_time=300 -print_final_stats=1 .fuzz-corpus \
		|| echo "atheris did not install or run here: the hypothesis fuzzing above still ran"

soak: $(STAMP)
	$(BIN)/python bench/soak.py --seconds 600 --clients 20

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .fuzz-corpus
