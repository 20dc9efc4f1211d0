# Every target sets up what it needs on a fresh clone with only Python 3.11+ and make.
#
# Installs come from uv.lock, made by uv (pinned below and installed from the package index
# into .uv/ on first use): `make demo` gets the runtime dependencies only, `make test` adds
# the test toolchain, `make mutate` the mutation tester on top, all at exactly the locked
# versions. `make lock` refreshes the lock;
# `make test-latest` runs the suite against the newest releases pyproject allows.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
UV := .uv/bin/uv
UV_SYNC := $(UV) sync --locked --python $(PYTHON)
RUNTIME := $(VENV)/.runtime-installed
TOOLCHAIN := $(VENV)/.test-installed
MUTATOR := $(VENV)/.mutate-installed
LOCK_INPUTS := uv.lock pyproject.toml clients/codexctl/pyproject.toml
# uv uses the interpreter it is given, and never downloads one.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: demo test lint lock-check typecheck pytest docs bench fuzz soak mutate lock test-latest \
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
# not list, so the stamps of the groups it removed go with it.
$(RUNTIME): $(LOCK_INPUTS) | $(UV)
	$(UV_SYNC) --quiet --no-default-groups
	rm -f $(TOOLCHAIN) $(MUTATOR)
	touch $@

$(TOOLCHAIN): $(LOCK_INPUTS) | $(UV)
	$(UV_SYNC) --quiet --group test
	rm -f $(MUTATOR)
	touch $@ $(RUNTIME)

$(MUTATOR): $(LOCK_INPUTS) | $(UV)
	$(UV_SYNC) --quiet --group test --group mutate
	touch $@ $(TOOLCHAIN) $(RUNTIME)

demo: $(RUNTIME)
	$(BIN)/codexd demo

lint: $(TOOLCHAIN)
	$(BIN)/ruff check codexd clients/codexctl/codexctl tests bench

# uv's own check that uv.lock matches every pyproject.toml.
lock-check: | $(UV)
	$(UV) lock --check --python $(PYTHON)

typecheck: $(TOOLCHAIN)
	$(BIN)/mypy

# The daemons of the whole suite run on the default loop (uvloop), then the parts where the
# loop is felt run again on the standard asyncio loop (CODEXD_EVENT_LOOP, which the daemon
# fixtures pass on): the socket protocol, job streaming and subscriptions, the gateway, the
# client libraries and the daemon's signals and shutdown. The rest (config, auth, ledger,
# service files) does the same thing on either loop, and the in-process tests run on asyncio.
OTHER_LOOP_TESTS := tests/integration/test_rpc_protocol.py \
	tests/integration/test_job_subscriptions.py tests/integration/test_jobs_upstream.py \
	tests/integration/test_gateway.py tests/integration/test_gateway_websocket.py \
	tests/integration/test_client_typed.py \
	tests/integration/test_client_reattach.py tests/integration/test_clients.py \
	tests/integration/test_daemon_lifecycle.py
pytest: $(TOOLCHAIN)
	CODEXD_EVENT_LOOP=uvloop $(BIN)/pytest
	CODEXD_EVENT_LOOP=asyncio $(BIN)/pytest -q $(OTHER_LOOP_TESTS)

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

# Mutation testing of the core, not run in CI (too slow; timing in README): mutmut changes
# the modules [tool.mutmut] lists in pyproject.toml (the one list to edit when a module moves)
# one small edit at a time and runs the unit tests that reach each edit; an edit no test
# notices "survives". Prints the score per module and every survivor (`$(BIN)/mutmut show
# NAME` shows one) that tests/mutation_equivalents.toml does not accept; exits 1 when a module
# is under 90 %. mutants/ is rebuilt each time: mutmut keeps old verdicts for code that did
# not change, even when the tests did. MUTANTS='codexd.jobs.*' runs one module.
MUTATE_WORKERS ?= 2
mutate: $(MUTATOR)
	rm -rf mutants
	$(BIN)/mutmut run --max-children $(MUTATE_WORKERS) $(MUTANTS)
	$(BIN)/mutmut results --all true | $(BIN)/python tests/mutation_report.py

clean:
	rm -rf $(VENV) .uv .venv-latest build .pytest_cache .mypy_cache .ruff_cache .hypothesis \
		.fuzz-corpus mutants
