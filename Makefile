# Every target sets up what it needs on a fresh clone with only Python 3.11+ and make.
#
# Installs come from uv.lock, made by uv (pinned below and installed from the package index
# into .uv/ on first use): `make demo` gets the runtime dependencies only, `make test` adds
# the test toolchain, both at exactly the locked versions. `make lock` refreshes the lock;
# `make test-latest` runs the suite against the newest releases pyproject allows.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
UV := .uv/bin/uv
UV_SYNC := $(UV) sync --locked --python $(PYTHON)
RUNTIME := $(VENV)/.runtime-installed
TOOLCHAIN := $(VENV)/.test-installed
LOCK_INPUTS := uv.lock pyproject.toml clients/codexctl/pyproject.toml
# uv uses the interpreter it is given, and never downloads one.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: demo test lint lock-check typecheck pytest docs bench fuzz soak lock test-latest \
	install uninstall clean

# uv itself, pinned: with the interpreter's pip when it has one (no venv needed), else with
# the pip of a venv made for it. Either way the program lands in .uv/bin/uv.
$(UV):
	rm -rf .uv
	if $(PYTHON) -m pip --version >/dev/null 2>&1; then \
		$(PYTHON) -m pip install --quiet --disable-pip-version-check --target .uv \
			uv==$(UV_VERSION); \
	else \
		$(PYTHON) -m venv .uv && \
		.uv/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION); \
	fi

# The runtime only (what `make demo` needs). A sync is exact: it removes what the lock does
# not list, so the toolchain's stamp goes with it.
$(RUNTIME): $(LOCK_INPUTS) | $(UV)
	$(UV_SYNC) --quiet --no-default-groups
	rm -f $(TOOLCHAIN)
	touch $@

$(TOOLCHAIN): $(LOCK_INPUTS) | $(UV)
	$(UV_SYNC) --quiet --group test
	touch $@ $(RUNTIME)

demo: $(RUNTIME)
	$(BIN)/codexd demo

lint: $(TOOLCHAIN)
	$(BIN)/ruff check codexd clients/codexctl/codexctl tests bench

# uv's own check that uv.lock matches every pyproject.toml.
lock-check: | $(UV)
	$(UV) lock --check --python $(PYTHON)

typecheck: $(TOOLCHAIN)
	$(BIN)/mypy

pytest: $(TOOLCHAIN)
	$(BIN)/pytest

test: lock-check lint typecheck pytest

# The docs made from the code (docs/protocol.md); a unit test fails while they are stale.
docs: $(RUNTIME)
	$(BIN)/codexd docs

lock: | $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

# The suite against the newest releases pyproject's ranges allow, in a throwaway venv: drift
# shows here before a user's fresh install meets it.
test-latest: | $(UV)
	@dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && \
	$(UV) venv --quiet --python $(PYTHON) "$$dir" && \
	VIRTUAL_ENV="$$dir" $(UV) pip install --quiet --upgrade -e clients/codexctl -e . --group test && \
	echo "newest allowed releases:" && \
	VIRTUAL_ENV="$$dir" $(UV) pip freeze --quiet --exclude-editable | tr '\n' ' ' && echo && \
	"$$dir/bin/pytest" $(PYTEST_ARGS)

# codexd and codexctl on your PATH for every day use, as a uv tool (its own venv, the locked
# versions), from this checkout. UV_TOOL_DIR / UV_TOOL_BIN_DIR move it (default:
# ~/.local/share/uv/tools and ~/.local/bin).
install: | $(UV)
	mkdir -p build
	$(UV) export --locked --quiet --no-default-groups --no-emit-workspace --no-hashes \
		--format requirements.txt -o build/install-constraints.txt
	$(UV) tool install --quiet --force --python $(PYTHON) \
		--constraints build/install-constraints.txt \
		--with-executables-from codexd-client ./
	@echo "installed codexd and codexctl in $$($(UV) tool dir --bin)"

uninstall: | $(UV)
	$(UV) tool uninstall codexd-daemon

# Each prints numbers against a baseline measured in the same run; nothing is asserted.
bench: $(TOOLCHAIN)
	$(BIN)/python bench/rpc.py
	$(BIN)/python bench/config.py
	$(BIN)/python bench/jobs.py
	$(BIN)/python bench/limits.py
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/gateway.py

# Long versions of what `make test` runs briefly: property fuzzing with many more examples,
# atheris for 5 minutes when it installs, and the 10-minute soak (bench/soak.py).
# atheris is not in the lock: the toolchain stamp goes, so the next target syncs it away.
fuzz: $(TOOLCHAIN)
	rm -f $(TOOLCHAIN)
	CODEXD_FUZZ_EXAMPLES=20000 CODEXD_FUZZ_STEPS=200 $(BIN)/pytest -q -s tests/fuzz
	$(UV) pip install --quiet --python $(BIN)/python atheris && mkdir -p .fuzz-corpus && \
		$(BIN)/python fuzz/fuzz_decoders.py -max_total_time=300 -print_final_stats=1 .fuzz-corpus \
		|| echo "atheris did not install or run here: the hypothesis fuzzing above still ran"

soak: $(TOOLCHAIN)
	$(BIN)/python bench/soak.py --seconds 600 --clients 20

clean:
	rm -rf $(VENV) .uv .venv-latest build .pytest_cache .mypy_cache .ruff_cache .hypothesis \
		.fuzz-corpus
